"""Pre-tokenise HQ folders into training shards: ``python scripts/prepare_data.py --config ...``."""

import sys

from pure.cli import prepare_main

if __name__ == "__main__":
    sys.exit(prepare_main())
