"""Small writers of test inputs shared by several test files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def random_image(folder: Path, name: str, size: tuple[int, int] = (40, 32), seed: int = 0) -> Path:
    """A random RGB image of ``size`` (width, height) at ``folder/name``."""
    folder.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(folder / name)
    return folder / name
