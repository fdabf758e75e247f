"""`ray job submit --working-dir . -- python jobs/eval.py ...`: same arguments as `rayda eval`."""
import sys

from rayda.cli import main

if __name__ == "__main__":
    sys.exit(main(["eval", *sys.argv[1:]]))
