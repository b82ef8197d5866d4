"""What restoring one image produces (:class:`Restoration`), shared by the pipeline that makes it and the
writers that save it (:mod:`pure.infer`, :mod:`pure.demo`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image

STAGES = ("prepare", "answer", "decode", "blend")
"""The stages of :meth:`pure.pipeline.Restorer.restore`, as named in ``Restoration.timings``."""


@dataclass
class Restoration:
    """What one image's restoration produced."""

    image: Image.Image
    """The restored image, ``round(w * scale) x round(h * scale)``; RGBA when the input had alpha."""
    degradation: str
    """The perceived degradation sentence (e.g. "Medium blur, small noise.")."""
    description: str
    """The content description."""
    tile_answers: list[str]
    """The whole text answer of every tile, in tile order."""
    seed: int
    """Seed of the first tile's sampler (tile i uses seed + i)."""
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds spent per stage (:data:`STAGES`) and in all (``total``)."""
    entropy_map: np.ndarray | None = None
    """``[H, W]`` float32: each pixel's latent token entropy (nats), blended like the tiles."""
    batches: dict = field(default_factory=dict)
    """Tiles per batch (:meth:`pure.memory.BatchLog.as_dict`): requested, chosen, used, halvings."""
    settings: dict = field(default_factory=dict)
    """The sampling and restore settings used (plain values)."""
    model: str = ""
    """The backbone's revision (hub snapshot) or folder."""
    device: str = ""
    """Where the backbone ran and in which dtype, e.g. ``cuda:0 bfloat16`` or ``cpu float32``."""

    def sidecar(self) -> dict:
        """What the JSON sidecar records of this result (the writer adds file names and read details)."""
        return {
            "output_size": list(self.image.size),
            "degradation": self.degradation,
            "description": self.description,
            "tile_answers": self.tile_answers,
            "seed": self.seed,
            "model": self.model,
            "device": self.device,
            "batch_size": self.batches,
            "settings": self.settings,
            "timings_s": self.timings,
        }
