"""`ray job submit --working-dir . -- python jobs/generate.py ...`: same arguments as `rayda generate`."""
import sys

from rayda.cli import main

if __name__ == "__main__":
    sys.exit(main(["generate", *sys.argv[1:]]))
