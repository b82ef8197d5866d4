"""Restore a file or a folder: ``python scripts/infer.py --input lr/ --output sr/`` (see --help)."""

import sys

from pure.cli import infer_main

if __name__ == "__main__":
    sys.exit(infer_main())
