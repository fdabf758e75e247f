"""`ray job submit --working-dir . -- python jobs/tune.py ...`: same arguments as `rayda tune`."""
import sys

from rayda.cli import main

if __name__ == "__main__":
    sys.exit(main(["tune", *sys.argv[1:]]))
