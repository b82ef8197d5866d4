"""Colour correction of a restored image towards its low-quality input (StableSR's wavelet and AdaIN fixes).

PURE calls ``wavelet_color_fix(restored, lq_bicubic)``: the restored image keeps its own high frequencies and
takes the low frequencies (overall colour and shading) of the LQ image resized to the same size with PIL
bicubic. AdaIN instead matches each channel's mean and standard deviation.

Numerics follow the reference exactly: images enter as ``uint8 / 255`` (torchvision ``ToTensor``), the
result is clamped to [0, 1] and converted back by truncation, ``(x * 255).astype(uint8)``, as ``ToPILImage``
does. Replicate padding works for any image size, so images smaller than the largest blur radius (16) are
fine.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

WAVELET_LEVELS = 5
ADAIN_EPS = 1e-5
METHODS = ("wavelet", "adain", "none")


def _blur(image: torch.Tensor, radius: int) -> torch.Tensor:
    """3x3 binomial blur ``[[1,2,1],[2,4,2],[1,2,1]] / 16`` per channel, dilated by ``radius``.

    ``image``: [B, C, H, W] float -> [B, C, H, W], with replicate padding of ``radius`` on every side.
    """
    channels = image.shape[1]
    kernel = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]], dtype=image.dtype) / 16
    kernel = kernel.to(image.device).expand(channels, 1, 3, 3)
    padded = F.pad(image, (radius, radius, radius, radius), mode="replicate")
    return F.conv2d(padded, kernel, groups=channels, dilation=radius)


def _check_images(target: torch.Tensor, source: torch.Tensor | None = None) -> None:
    if target.ndim != 4 or not target.is_floating_point():
        raise ValueError(
            f"expected a float tensor [B, C, H, W], got {target.dtype} of shape {tuple(target.shape)}"
        )
    if source is not None and source.shape != target.shape:
        raise ValueError(
            f"target {tuple(target.shape)} and source {tuple(source.shape)} must have the same shape; "
            "resize the source (the LQ image) to the target's size first"
        )


def wavelet_decompose(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split ``image`` into high and low frequencies with a 5-level dilated blur cascade.

    Level r (r = 1, 2, 4, 8, 16) blurs the previous level's low band; ``high`` sums ``low_before - blur``
    over the levels and ``low`` is the last blur, so ``high + low == image`` up to rounding.

    Args:
        image: [B, C, H, W] float, any range (images are in [0, 1]).

    Returns:
        ``(high, low)``, both [B, C, H, W] in the dtype of ``image``.
    """
    _check_images(image)
    high = torch.zeros_like(image)
    low = image
    for level in range(WAVELET_LEVELS):
        blurred = _blur(low, 2**level)
        high = high + (low - blurred)
        low = blurred
    return high, low


def wavelet_color_fix(target: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """High frequencies of ``target`` plus low frequencies of ``source``.

    Args:
        target: [B, 3, H, W] float in [0, 1], the restored image.
        source: [B, 3, H, W] float in [0, 1], the LQ image resized to the target's size.

    Returns:
        [B, 3, H, W] float, not clamped (slightly outside [0, 1] near strong edges).
    """
    _check_images(target, source)
    target_high, _ = wavelet_decompose(target)
    _, source_low = wavelet_decompose(source)
    return target_high + source_low


def _mean_std(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and ``sqrt(unbiased variance + 1e-5)`` of [B, C, H, W], each [B, C, 1, 1]."""
    flat = image.flatten(2)
    std = (flat.var(dim=2) + ADAIN_EPS).sqrt()
    return flat.mean(dim=2)[..., None, None], std[..., None, None]


def adain_color_fix(target: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """Give each channel of ``target`` the mean and standard deviation of ``source`` (AdaIN).

    Args:
        target: [B, 3, H, W] float in [0, 1], the restored image.
        source: [B, 3, H, W] float in [0, 1], the LQ image resized to the target's size.

    Returns:
        [B, 3, H, W] float, not clamped.

    A single-pixel image has no (unbiased) variance; its normalised value is 0 for any finite standard
    deviation, so it takes the source's colour (the limit of the formula, not a NaN).
    """
    _check_images(target, source)
    if target.shape[2] * target.shape[3] < 2:
        return source.clone()
    target_mean, target_std = _mean_std(target)
    source_mean, source_std = _mean_std(source)
    return (target - target_mean) / target_std * source_std + source_mean


_FIXES = {"wavelet": wavelet_color_fix, "adain": adain_color_fix}


def _to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> [1, 3, H, W] float32 in [0, 1] (``uint8 / 255``)."""
    array = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1)[None].float().div(255)


def _to_pil(image: torch.Tensor) -> Image.Image:
    """[1, 3, H, W] float -> RGB PIL image: clamp to [0, 1], times 255, truncate to uint8."""
    array = image[0].clamp(0, 1).mul(255).byte().permute(1, 2, 0).numpy()
    return Image.fromarray(array)


def color_fix(target: Image.Image, source: Image.Image, method: str = "wavelet") -> Image.Image:
    """Correct the colours of ``target`` towards ``source``, as PURE does after restoring an image.

    Args:
        target: the restored image (converted to RGB).
        source: the LQ image already resized to ``target.size`` (PURE uses PIL bicubic).
        method: ``"wavelet"`` (PURE's default), ``"adain"`` or ``"none"`` (returns ``target`` itself).

    Returns:
        An RGB image of ``target.size``; uint8 values come from truncating ``clamp(x, 0, 1) * 255``
        (``"none"``: ``target`` itself, in its own mode).

    Raises:
        ValueError: for an unknown ``method`` or if the two sizes differ (checked for every method).
    """
    if method not in METHODS:
        raise ValueError(f"unknown colour-fix method {method!r}; choose one of {', '.join(METHODS)}")
    if target.size != source.size:
        raise ValueError(
            f"source size {source.size} differs from target size {target.size} (W, H); "
            "resize the LQ image to the restored image's size before the colour fix"
        )
    if method == "none":
        return target
    with torch.no_grad():
        fixed = _FIXES[method](_to_tensor(target), _to_tensor(source))
    return _to_pil(fixed)
