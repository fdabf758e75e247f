"""`ray job submit --working-dir . -- python jobs/bench.py ...`: same arguments as `rayda bench`."""
import sys

from rayda.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
