"""Merge a LoRA checkpoint into a standalone model: ``python scripts/merge_lora.py CHECKPOINT OUTPUT``."""

import sys

from pure.cli import merge_main

if __name__ == "__main__":
    sys.exit(merge_main())
