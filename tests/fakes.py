"""Small writers of test inputs, and runs on them, shared by several test files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
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


class BlockVQ(torch.nn.Module):
    """A stand-in VQ that is exact on grey images made of 8x8 constant blocks: code = grey level."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        grey = (images[:, 0] + 1) / 2 * 255
        return torch.nn.functional.avg_pool2d(grey[:, None], 8)[:, 0].round().long()

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        grey = (codes.float() + 0.5) / 255 * 2 - 1  # +0.5: survive truncation to 8 bits
        return grey[:, None].repeat_interleave(8, 2).repeat_interleave(8, 3).expand(-1, 3, -1, -1)
