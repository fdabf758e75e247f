"""`ray job submit --working-dir . -- python jobs/pair.py ...`: same arguments as `rayda pair`."""
import sys

from rayda.cli import main

if __name__ == "__main__":
    sys.exit(main(["pair", *sys.argv[1:]]))
