"""Split an image of any size into fixed-size square tiles and blend the restored tiles back.

The model restores ``tile x tile`` images (512 in PURE) cut from the bicubic-upsampled input, so every
size here is in output pixels. The recipe:

1. ``out_w, out_h = output_size(w, h, scale)``; resize the LQ image to that size (bicubic).
2. ``image = pad_to(image, *padded_size(out_h, out_w, tile))``: a dimension smaller than a tile is
   padded by repeating the edge pixels (never stretched); larger dimensions are left alone.
3. For each ``box`` in ``tile_boxes(out_h, out_w, tile, overlap)``: restore ``box.crop(image)`` and
   ``blender.add(restored, box)``.
4. ``blender.result()`` is the blended [C, out_h, out_w] image.

Blending divides the weighted sum of the tiles by the sum of the weights at each pixel, so a pixel
covered by one tile gets that tile's value whatever its weight there, and overlaps fade smoothly from one
tile to the next. Only the canvas holds the whole image; it lives on the CPU unless told otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Box:
    """A tile's rows ``[top, bottom)`` and columns ``[left, right)`` in (padded) output pixels."""

    top: int
    left: int
    bottom: int
    right: int

    @property
    def height(self) -> int:
        return self.bottom - self.top

    @property
    def width(self) -> int:
        return self.right - self.left

    def crop(self, image: torch.Tensor) -> torch.Tensor:
        """``image[..., top:bottom, left:right]`` for an image [..., H, W] (a view, not a copy)."""
        return image[..., self.top : self.bottom, self.left : self.right]


def _check_tiling(tile: int, overlap: int) -> None:
    if tile <= 0 or overlap < 0 or overlap >= tile:
        raise ValueError(f"need tile > overlap >= 0 and tile > 0, got tile={tile}, overlap={overlap}")


def _check_size(height: int, width: int) -> None:
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got height={height}, width={width}")


def _starts(size: int, tile: int, overlap: int) -> list[int]:
    """Tile starts along one dimension: every ``tile - overlap`` pixels, the last one flush with the end."""
    if size <= tile:
        return [0]
    stride = tile - overlap
    count = math.ceil((size - tile) / stride) + 1
    return [min(i * stride, size - tile) for i in range(count)]


def padded_size(height: int, width: int, tile: int) -> tuple[int, int]:
    """``(max(height, tile), max(width, tile))``: the canvas size that every tile fits in."""
    _check_size(height, width)
    return max(height, tile), max(width, tile)


def tile_boxes(height: int, width: int, tile: int, overlap: int) -> list[Box]:
    """``tile x tile`` boxes covering a ``height x width`` image, row by row.

    Along each dimension tiles start every ``tile - overlap`` pixels and the last one is shifted back to
    end at the image's edge, so neighbours overlap by at least ``overlap`` (more for the last pair). A
    dimension no larger than ``tile`` gets a single tile ``[0, tile)``, which extends past the image when
    the image is smaller: pad the image to :func:`padded_size` with :func:`pad_to` first.

    Raises:
        ValueError: unless ``tile > overlap >= 0`` and the size is positive.
    """
    _check_tiling(tile, overlap)
    _check_size(height, width)
    return [
        Box(top, left, top + tile, left + tile)
        for top in _starts(height, tile, overlap)
        for left in _starts(width, tile, overlap)
    ]


def tile_count(width: int, height: int, scale: float, tile: int, overlap: int) -> int:
    """How many tiles (model answers) restoring a ``width x height`` input at ``scale`` takes: the
    :func:`tile_boxes` of its :func:`output_size`.

    Raises:
        ValueError: as :func:`output_size` and :func:`tile_boxes` do.
    """
    _check_tiling(tile, overlap)
    out_w, out_h = output_size(width, height, scale)
    return len(_starts(out_h, tile, overlap)) * len(_starts(out_w, tile, overlap))


def pad_to(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Pad ``image`` at the bottom and right by repeating its edge pixels.

    Args:
        image: [C, h, w] or [B, C, h, w] float, any range.
        height, width: the size wanted, at least ``h`` and ``w``.

    Returns:
        [C, height, width] or [B, C, height, width]; ``image`` itself when nothing needs padding.
    """
    if image.ndim not in (3, 4):
        raise ValueError(f"expected an image [C, H, W] or [B, C, H, W], got shape {tuple(image.shape)}")
    pad_h, pad_w = height - image.shape[-2], width - image.shape[-1]
    if pad_h < 0 or pad_w < 0:
        raise ValueError(
            f"cannot pad an image of {image.shape[-2]}x{image.shape[-1]} (HxW) down to {height}x{width}"
        )
    if pad_h == 0 and pad_w == 0:
        return image
    return F.pad(image, (0, pad_w, 0, pad_h), mode="replicate")


def blend_weights(tile: int, overlap: int) -> torch.Tensor:
    """A ``[tile, tile]`` float32 window: 1 inside, a raised-cosine ramp over ``overlap`` px at each border.

    The ramp goes from near 0 at the border to 1, sampled at pixel centres so that every weight is
    strictly positive (in (0, 1]); ``overlap = 0`` gives all ones. The ramps of two tiles that overlap by
    exactly ``overlap`` pixels sum to 1 there; any other overlap is still seamless because
    :class:`TileBlender` divides by the summed weights.
    """
    _check_tiling(tile, overlap)
    if overlap == 0:
        return torch.ones(tile, tile)
    position = torch.arange(tile, dtype=torch.float64)
    distance = torch.minimum(position, tile - 1 - position) + 0.5  # to the nearest border, in pixels
    ramp = 0.5 - 0.5 * torch.cos(math.pi * torch.clamp(distance / overlap, max=1.0))
    return torch.outer(ramp, ramp).float()


class TileBlender:
    """Accumulates restored tiles into one image, weighting overlaps with :func:`blend_weights`.

    Args:
        height, width: the image size in output pixels (before padding).
        tile, overlap: as given to :func:`tile_boxes`.
        channels: channels of each tile (3 for RGB).
        device: where the canvas lives; tiles from other devices are moved there.
    """

    def __init__(
        self,
        height: int,
        width: int,
        tile: int,
        overlap: int,
        channels: int = 3,
        device: torch.device | str = "cpu",
    ) -> None:
        _check_tiling(tile, overlap)
        self.height, self.width, self.tile = height, width, tile
        canvas_h, canvas_w = padded_size(height, width, tile)
        self.weights = blend_weights(tile, overlap).to(device)
        self.canvas = torch.zeros(channels, canvas_h, canvas_w, device=device)
        self.weight_sum = torch.zeros(1, canvas_h, canvas_w, device=device)

    def add(self, tile: torch.Tensor, box: Box) -> None:
        """Add a restored tile [C, tile, tile] (float, any range, any device) at ``box``."""
        expected = (self.canvas.shape[0], self.tile, self.tile)
        if tuple(tile.shape) != expected:
            raise ValueError(f"expected a tile of shape {expected}, got {tuple(tile.shape)}")
        if (
            box.top < 0
            or box.left < 0
            or box.bottom > self.canvas.shape[1]
            or box.right > self.canvas.shape[2]
        ):
            raise ValueError(f"{box} lies outside the padded canvas {tuple(self.canvas.shape[1:])}")
        tile = tile.to(self.canvas.device, self.canvas.dtype)
        box.crop(self.canvas).add_(tile * self.weights)
        box.crop(self.weight_sum).add_(self.weights)

    def result(self) -> torch.Tensor:
        """The blended image [C, height, width] (float32, on the canvas's device), padding cropped off."""
        weight_sum = self.weight_sum[:, : self.height, : self.width]
        if not bool((weight_sum > 0).all()):
            raise ValueError("some pixels are not covered by any tile: add every box from tile_boxes first")
        return self.canvas[:, : self.height, : self.width] / weight_sum


def output_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """``(round(width * scale), round(height * scale))``, each at least 1 px.

    Python's ``round`` rounds halves to even: 127 x 63 at 2.5 gives 318 x 158 (317.5 -> 318, 157.5 -> 158).

    Raises:
        ValueError: for a non-positive size or a scale that is not a finite number > 0.
    """
    _check_size(height, width)
    if not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale must be a finite number > 0, got {scale}")
    return max(1, round(width * scale)), max(1, round(height * scale))
