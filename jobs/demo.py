"""`ray job submit --working-dir . -- python jobs/demo.py ...`: same arguments as `rayda demo`."""
import sys

from rayda.cli import main

if __name__ == "__main__":
    sys.exit(main(["demo", *sys.argv[1:]]))
