"""Super-resolve a named test set with scripts/infer.py, then score it; see ``--help`` and pure/metrics.py."""

import sys

from pure.cli import benchmark_main

if __name__ == "__main__":
    sys.exit(benchmark_main())
