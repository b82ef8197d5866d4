"""Fetch the weights runs need into one folder (connected machine): ``python scripts/download.py models``."""

import sys

from pure.cli import download_main

if __name__ == "__main__":
    sys.exit(download_main())
