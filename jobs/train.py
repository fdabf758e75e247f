"""`ray job submit --working-dir . -- python jobs/train.py ...`: same arguments as `rayda train`."""
import sys

from rayda.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
