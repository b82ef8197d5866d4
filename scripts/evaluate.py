"""Score super-resolved images against ground truth with pyiqa; see ``--help`` and pure/metrics.py."""

import sys

from pure.cli import evaluate_main

if __name__ == "__main__":
    sys.exit(evaluate_main())
