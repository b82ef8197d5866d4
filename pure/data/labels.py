"""Degradation labels: blur and noise severities in [0, 1], binned into PURE's sentence.

    severity < 1/3 -> small,  < 2/3 -> medium,  else large      "Medium blur, small noise."

**From drawn parameters** (synthetic pairs, :func:`label_from_params`). A severity should say how
blurred or noisy the *LQ image the model sees* is, not how large one drawn number was: the same
kernel blurs the LQ four times less when applied at the HQ size than at the LQ size, and noise added
before a 4x downsampling partly averages away. So both are measured in LQ pixels:

- every blur kernel counts as the Gaussian with the same energy: ``sigma^2 = 1 / (4 pi sum k^2) -
  1 / (4 pi)`` (0 for a delta). Unlike the second moment, this is not thrown off by the heavy tails of
  plateau kernels or the negative lobes of sinc kernels. Blurs compose like Gaussians (variances add),
  each divided by (its grid's pixels per LQ pixel)^2. A resize below the LQ size is a bottleneck that
  blurs like a box one grid pixel wide: ``(1 / r^2 - 1) / 12`` LQ px^2 for the smallest relative size
  ``r < 1`` on the way.
- each noise keeps its realised standard deviation times the white-noise gain of every linear step
  after it: ``sqrt(sum k^2)`` per kernel and the root-sum-square of the interpolation weights per
  resize. The two noises add in variance. JPEG and clipping are ignored, and the gain of a step that
  follows a blur is that of white noise, which under-estimates how much smooth noise survives (on
  RealESRGAN_x4plus draws the noise really left in the LQ image is about 1.4x this, correlation 0.8).

Each value maps linearly onto [0, 1] between the two ends of ``labels.blur_range`` (sigma 0.35 to
1.1 LQ px) and ``labels.noise_range`` (std 0.5 to 14.5 levels), clipped. These ends put the bin
edges (blur sigma 0.6 / 0.85, noise std 5.2 / 9.8) at the tertiles of RealESRGAN_x4plus's draws on
real photographs (0.60 / 0.85 and 5.3 / 10.0 over 300 draws on realsr-mini), so each word labels
about a third of the data and all three are learned.

Real pairs, which come without parameters, are not labelled here.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from pure.config import ConfigError, LabelConfig
from pure.data.degradations import Blur, DegradationParams, kernel

LEVELS = ("small", "medium", "large")
"""Bin names, from severity < 1/3 to >= 2/3."""
CLEAN_EDGE_SIGMA = 0.4
"""Edge width (sigma, LQ px) that :func:`estimate_blur_sigma` takes as sharp: its median on synthetic
pairs then matches :func:`blur_sigma`'s (clean x4 downsamples measure 0.25 to 0.75)."""
NOISE_BLOCK = 8
"""Side of the blocks :func:`estimate_noise_std` fits planes to."""


@dataclass(frozen=True)
class Label:
    """Two severities and the sentence they make."""

    blur: float
    """Blur severity in [0, 1]."""
    noise: float
    """Noise severity in [0, 1]."""

    @property
    def text(self) -> str:
        """PURE's degradation sentence, e.g. "Medium blur, small noise."."""
        return f"{level(self.blur).capitalize()} blur, {level(self.noise)} noise."


def level(severity: float) -> str:
    """small below 1/3, medium below 2/3, large from 2/3 up."""
    return LEVELS[min(int(severity * 3), 2)] if severity > 0 else LEVELS[0]


def severity(value: float, ends: list[float]) -> float:
    """``value`` mapped linearly from ``[ends[0], ends[1]]`` onto [0, 1], clipped."""
    low, high = ends
    if high <= low:
        raise ConfigError(
            f"severity range {list(ends)} must be increasing: fix labels.blur_range / noise_range"
        )
    return float(min(max((value - low) / (high - low), 0.0), 1.0))


# ----------------------------------------------------------------------------- from parameters


def kernel_energy(blur: Blur | None) -> float:
    """``sum k^2`` of the drawn kernel (1 for no blur): its white-noise variance gain."""
    return 1.0 if blur is None else float((kernel(blur).astype(np.float64) ** 2).sum())


def kernel_variance(blur: Blur | None) -> float:
    """Variance (px^2 of the kernel's grid) of the Gaussian with the same energy as the kernel; 0 for none."""
    return max(1.0 / (4 * math.pi * kernel_energy(blur)) - 1.0 / (4 * math.pi), 0.0)


@functools.lru_cache(maxsize=4096)
def resize_gain(n_in: int, n_out: int, mode: str) -> float:
    """White-noise std gain of a 1-D ``F.interpolate`` from ``n_in`` to ``n_out`` samples."""
    eye = torch.eye(n_in, dtype=torch.float64).view(n_in, 1, 1, n_in)
    weights = F.interpolate(eye, size=(1, n_out), mode=mode)  # [n_in, 1, 1, n_out]: output j's weights
    return float(weights.pow(2).sum(0).mean().sqrt())


def _resize_gain(size_in: list[int], size_out: list[int], mode: str) -> float:
    return resize_gain(size_in[0], size_out[0], mode) * resize_gain(size_in[1], size_out[1], mode)


def blur_sigma(p: DegradationParams) -> float:
    """Extra blur of the LQ image as a Gaussian sigma in LQ pixels (see the module docstring)."""
    lq_h = p.hq_size[0] // p.scale
    rel1 = p.first.resize.size[0] / lq_h  # grid pixels per LQ pixel after the first resize
    rel2 = p.second.resize.size[0] / lq_h
    variance = (
        kernel_variance(p.first.blur) / p.scale**2
        + kernel_variance(p.second.blur) / rel1**2
        + kernel_variance(p.final_sinc)
    )
    bottleneck = min(1.0, rel1, rel2)
    variance += (1 / bottleneck**2 - 1) / 12
    return math.sqrt(variance)


def noise_std(p: DegradationParams) -> float:
    """Noise left in the LQ image, std in 8-bit levels (see the module docstring)."""
    lq_size = [p.hq_size[0] // p.scale, p.hq_size[1] // p.scale]
    size1, size2 = p.first.resize.size, p.second.resize.size
    sinc = kernel_energy(p.final_sinc)
    to_lq = _resize_gain(size2, lq_size, p.final_resize_mode) ** 2 * sinc  # variance gains
    first = kernel_energy(p.second.blur) * _resize_gain(size1, size2, p.second.resize.mode) ** 2 * to_lq
    return math.sqrt(p.first.noise.std**2 * first + p.second.noise.std**2 * to_lq)


def label_from_params(params: DegradationParams, cfg: LabelConfig) -> Label:
    """The label of a synthetic pair from the parameters :func:`~pure.data.degradations.degrade` drew."""
    return Label(severity(blur_sigma(params), cfg.blur_range), severity(noise_std(params), cfg.noise_range))
