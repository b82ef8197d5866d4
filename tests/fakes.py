"""Small writers of test inputs, and runs on them, shared by several test files."""

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


def restore_with_tiny(folder: Path, *flags: str) -> tuple[int, Path]:
    """``scripts/infer.py``'s entry point on a random 24x20 photo in ``folder`` with ``configs/tiny.yaml``
    (64 px tiles) and ``flags``; returns the exit code and the output folder."""
    from pure.cli import infer_main

    photo, out = random_image(folder, "photo.png", (24, 20)), folder / "out"
    tiny = ["--config", str(Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml")]
    args = ["-i", str(photo), "-o", str(out), "--no-progress", *flags, *tiny]
    return infer_main(args + ["restore.tile=64", "restore.tile_overlap=16"]), out
