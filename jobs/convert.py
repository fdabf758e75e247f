"""`ray job submit --working-dir . -- python jobs/convert.py KIND --root ... --out ...`: arguments of `rayda convert`."""
import sys

from rayda.cli import main

if __name__ == "__main__":
    sys.exit(main(["convert", *sys.argv[1:]]))
