"""Deterministic, name-addressed weights for tiny models (CPU tests, ``source: tiny``).

Every tensor is drawn from its own generator seeded by ``(seed, crc32(name))`` and scaled by
the first matching rule below. This is the rule the reference fixtures in
``../shared/reference`` were made with, so a model whose parameters carry the reference's
names and shapes reproduces the reference's numbers exactly.

1. ``...codebook_used``                       -> zeros (training-only VQ usage counter)
2. contains ``quantize.embedding``/``codebook`` -> z      (VQ codebook)
3. contains ``embed_tokens``/``embedding``    -> 0.02 z  (token tables)
4. ends in ``bias``                           -> 0.02 z
5. contains ``norm`` and ends in ``weight``   -> 1 + 0.1 z
6. rank >= 2                                  -> z / sqrt(fan_in), fan_in = prod(shape[1:])
7. anything else                              -> 0.02 z
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence

import numpy as np
import torch


def det_tensor(name: str, shape: Sequence[int], seed: int) -> torch.Tensor:
    """A float32 tensor of ``shape`` determined only by ``name`` and ``seed``."""
    shape = tuple(int(s) for s in shape)
    z = np.random.default_rng([int(seed), zlib.crc32(name.encode("utf-8"))]).standard_normal(shape)
    if name.endswith("codebook_used"):
        values = np.zeros(shape)
    elif "quantize.embedding" in name or "codebook" in name:
        values = z
    elif "embed_tokens" in name or "embedding" in name:
        values = 0.02 * z
    elif name.endswith("bias"):
        values = 0.02 * z
    elif "norm" in name and name.endswith("weight"):
        values = 1.0 + 0.1 * z
    elif len(shape) >= 2:
        values = z / math.sqrt(math.prod(shape[1:]))
    else:
        values = 0.02 * z
    return torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))


def det_state_dict(shapes: Mapping[str, Sequence[int]], seed: int) -> dict[str, torch.Tensor]:
    """``{name: shape}`` -> ``{name: float32 tensor}`` by :func:`det_tensor`."""
    return {name: det_tensor(name, shape, seed) for name, shape in shapes.items()}
