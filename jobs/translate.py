"""`ray job submit --working-dir . -- python jobs/translate.py ...`: same arguments as `rayda translate`."""
import sys

from rayda.cli import main

if __name__ == "__main__":
    sys.exit(main(["translate", *sys.argv[1:]]))
