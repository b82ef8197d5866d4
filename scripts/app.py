"""The web demo: ``python scripts/app.py --config configs/tiny.yaml``, then open the address it prints."""

import sys

from pure.cli import app_main

if __name__ == "__main__":
    sys.exit(app_main())
