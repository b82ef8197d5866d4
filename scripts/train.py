"""Fine-tune PURE: ``python scripts/train.py --config configs/train_lora_x4.yaml [key=value ...]``.

Several GPUs or nodes: run it under ``accelerate launch --config_file configs/accelerate/...``
(see ``--help`` and the README's Training section).
"""

import sys

from pure.cli import train_main

if __name__ == "__main__":
    sys.exit(train_main())
