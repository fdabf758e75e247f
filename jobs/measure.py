"""`ray job submit --working-dir . -- python jobs/measure.py ...`: same arguments as `rayda measure`."""
import sys

from rayda.cli import main

if __name__ == "__main__":
    sys.exit(main(["measure", *sys.argv[1:]]))
