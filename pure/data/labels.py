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

**From an image alone** (real pairs, no parameters): any :class:`SeverityEstimator` (a callable from
an LQ image to two severities; ``load_estimator("package.module:name")`` imports one, e.g. a small
trained regressor) or the built-in :func:`estimate_severity`: noise from the flattest 8 x 8 blocks,
blur from Zhuo and Sim's gradient ratio at edges, on the same scales. It is rough: on 60
RealESRGAN_x4plus draws its values correlate with the parameter-based ones at about 0.6.
"""

from __future__ import annotations

import functools
import importlib
import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from pure.config import LabelConfig
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
        raise ValueError(
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


# ----------------------------------------------------------------------------- from an image


class SeverityEstimator(Protocol):
    """Anything that rates an LQ image: ``lq [3, H, W]`` float in [0, 1] -> (blur, noise) in [0, 1]."""

    def __call__(self, lq: torch.Tensor) -> tuple[float, float]: ...


def _gray255(lq: torch.Tensor) -> torch.Tensor:
    """[3, H, W] in [0, 1] -> [1, 1, H, W] float64 luma in 8-bit levels."""
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64).view(3, 1, 1)
    return (lq.detach().cpu().double() * weights).sum(0)[None, None] * 255


def estimate_noise_std(lq: torch.Tensor) -> float:
    """Noise std in 8-bit levels: the 10th percentile of the residual std of planes fitted to 8 x 8 blocks.

    The flattest blocks hold little but noise, and unlike high-pass estimators (Immerkaer's) this also
    sees the spatially correlated noise that blur, resizing and JPEG leave.
    """
    b = NOISE_BLOCK
    gray = _gray255(lq)[0, 0]
    h, w = gray.shape[0] // b * b, gray.shape[1] // b * b
    if h == 0 or w == 0:
        raise ValueError(f"image of {gray.shape[1]}x{gray.shape[0]} px is too small to estimate noise on")
    blocks = gray[:h, :w].reshape(h // b, b, w // b, b).permute(1, 3, 0, 2).reshape(b * b, -1)
    yy, xx = torch.meshgrid(
        torch.arange(b, dtype=torch.float64), torch.arange(b, dtype=torch.float64), indexing="ij"
    )
    plane = torch.stack([torch.ones(b * b, dtype=torch.float64), yy.flatten(), xx.flatten()], 1)  # [b*b, 3]
    residual = blocks - plane @ torch.linalg.lstsq(plane, blocks).solution
    return float((residual.pow(2).sum(0) / (b * b - 3)).sqrt().quantile(0.1))


def estimate_blur_sigma(lq: torch.Tensor, reblur: float = 1.0) -> float:
    """Zhuo and Sim's (2011) edge-width estimate, minus the width of a clean downsample, in LQ pixels.

    Re-blurring an edge of width ``sigma`` with ``reblur`` divides its gradient by
    ``R = sqrt(sigma^2 + reblur^2) / sigma``, so ``sigma = reblur / sqrt(R^2 - 1)``; the median over the
    5 % strongest gradients is the image's edge width.
    """
    gray = _gray255(lq)
    radius = 3
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    g1 = torch.exp(-(x**2) / (2 * reblur**2))
    g1 = g1 / g1.sum()
    blurred = F.conv2d(F.pad(gray, (radius,) * 4, mode="replicate"), g1.view(1, 1, 1, -1))
    blurred = F.conv2d(blurred, g1.view(1, 1, -1, 1))

    def grad(img: torch.Tensor) -> torch.Tensor:
        dx, dy = img[..., 1:-1, 2:] - img[..., 1:-1, :-2], img[..., 2:, 1:-1] - img[..., :-2, 1:-1]
        return (dx.pow(2) + dy.pow(2)).sqrt().flatten()

    sharp, soft = grad(gray), grad(blurred)
    edges = sharp >= sharp.quantile(0.95)
    ratio = (sharp[edges] / soft[edges].clamp_min(1e-6)).clamp_min(1.0 + 1e-3)
    sigma = float((reblur / (ratio.pow(2) - 1).sqrt()).median())
    return math.sqrt(max(sigma**2 - CLEAN_EDGE_SIGMA**2, 0.0))


def estimate_severity(lq: torch.Tensor, cfg: LabelConfig | None = None) -> tuple[float, float]:
    """The built-in :class:`SeverityEstimator`: rough (blur, noise) severities of an LQ image alone.

    ``lq``: ``[3, H, W]`` float in [0, 1] at the LQ resolution; mapped as :func:`label_from_params`.
    """
    cfg = cfg or LabelConfig()
    return severity(estimate_blur_sigma(lq), cfg.blur_range), severity(
        estimate_noise_std(lq), cfg.noise_range
    )


def load_estimator(spec: str) -> SeverityEstimator:
    """Import ``"package.module:name"``: a :class:`SeverityEstimator` (or a factory returning one)."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"estimator {spec!r} must look like 'package.module:name'")
    try:
        target = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"cannot import the estimator {spec!r}: {err}") from err
    return target() if isinstance(target, type) else target


def label_from_image(lq: torch.Tensor, estimator: SeverityEstimator = estimate_severity) -> Label:
    """The label of a real LQ image ``[3, H, W]`` in [0, 1] from ``estimator`` (default: the built-in one)."""
    blur, noise = estimator(lq)
    if not (0.0 <= blur <= 1.0 and 0.0 <= noise <= 1.0):
        raise ValueError(f"the estimator returned severities ({blur}, {noise}); both must lie in [0, 1]")
    return Label(float(blur), float(noise))
