"""Tiling: box geometry for any size, edge padding, seamless blending, output sizes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pure.tiling import (
    Box,
    TileBlender,
    blend_weights,
    output_size,
    pad_to,
    padded_size,
    tile_boxes,
    tile_count,
)

SIZES = [(1, 1), (5, 9), (16, 16), (17, 16), (16, 17), (40, 23), (64, 100)]


def _check_geometry(height: int, width: int, tile: int, overlap: int) -> list[Box]:
    """Assert the tiling invariants and return the boxes."""
    boxes = tile_boxes(height, width, tile, overlap)
    canvas_h, canvas_w = padded_size(height, width, tile)
    tops = sorted({box.top for box in boxes})
    lefts = sorted({box.left for box in boxes})
    assert len(boxes) == len(tops) * len(lefts)
    for box in boxes:
        assert (box.height, box.width) == (tile, tile)
        assert 0 <= box.top and box.bottom <= canvas_h and 0 <= box.left and box.right <= canvas_w
    for starts, size in ((tops, height), (lefts, width)):
        assert starts[0] == 0
        assert starts[-1] + tile == max(size, tile)  # the last tile is flush with the edge
        for first, second in zip(starts, starts[1:], strict=False):
            assert first + tile - second >= overlap  # neighbours overlap enough (so no gaps)
    return boxes


@pytest.mark.parametrize("height, width", SIZES)
@pytest.mark.parametrize("tile, overlap", [(16, 0), (16, 4), (16, 15), (7, 3)])
def test_boxes_cover_every_pixel(height, width, tile, overlap):
    boxes = _check_geometry(height, width, tile, overlap)
    covered = torch.zeros(padded_size(height, width, tile), dtype=torch.int32)
    for box in boxes:
        box.crop(covered).add_(1)
    assert bool((covered[:height, :width] > 0).all())
    assert boxes == tile_boxes(height, width, tile, overlap)  # deterministic


def test_box_counts_around_one_tile():
    assert tile_boxes(10, 12, 16, 4) == [Box(0, 0, 16, 16)]  # smaller: one tile, the caller pads
    assert tile_boxes(16, 16, 16, 4) == [Box(0, 0, 16, 16)]  # exactly a tile
    assert tile_boxes(16, 17, 16, 4) == [Box(0, 0, 16, 16), Box(0, 1, 16, 17)]  # tile + 1: shifted back
    assert [box.left for box in tile_boxes(16, 40, 16, 4)] == [0, 12, 24]  # stride 12, last flush


def test_large_image_geometry():
    boxes = _check_geometry(3000, 4000, 512, 64)
    stride = 512 - 64
    assert len(boxes) == 7 * 9  # ceil((3000 - 512) / 448) + 1 rows, ceil((4000 - 512) / 448) + 1 columns
    assert boxes[1].left == stride and boxes[-1] == Box(3000 - 512, 4000 - 512, 3000, 4000)


@pytest.mark.parametrize("tile, overlap", [(0, 0), (8, 8), (8, 9), (8, -1)])
def test_invalid_tiling_is_an_error(tile, overlap):
    with pytest.raises(ValueError, match="tile > overlap >= 0"):
        tile_boxes(32, 32, tile, overlap)
    with pytest.raises(ValueError, match="tile > overlap >= 0"):
        blend_weights(tile, overlap)


def test_invalid_size_is_an_error():
    with pytest.raises(ValueError, match="positive"):
        tile_boxes(0, 32, 16, 4)


@pytest.mark.parametrize("tile, overlap", [(16, 0), (16, 1), (16, 4), (16, 8), (16, 15), (512, 64)])
def test_blend_weights(tile, overlap):
    weights = blend_weights(tile, overlap)
    assert weights.shape == (tile, tile) and weights.dtype == torch.float32
    assert bool((weights > 0).all()) and bool((weights <= 1).all())
    torch.testing.assert_close(weights, weights.T)
    torch.testing.assert_close(weights, weights.flip(0))
    if 2 * overlap < tile:
        assert bool((weights[overlap : tile - overlap, overlap : tile - overlap] == 1).all())
        row = weights[tile // 2]  # all ones except the two ramps
        assert bool((row[1 : overlap + 1] > row[:overlap]).all())  # rising towards the interior
        # Raised-cosine ramps of two tiles overlapping by exactly `overlap` sum to 1.
        torch.testing.assert_close(row[:overlap] + row[tile - overlap :], torch.ones(overlap))


def test_pad_to_repeats_edges():
    image = torch.arange(6.0).reshape(1, 2, 3)
    padded = pad_to(image, 4, 5)
    assert padded.shape == (1, 4, 5)
    torch.testing.assert_close(padded[:, :2, :3], image)
    torch.testing.assert_close(padded[0, :, 4], torch.tensor([2.0, 5.0, 5.0, 5.0]))
    torch.testing.assert_close(padded[0, 3], torch.tensor([3.0, 4.0, 5.0, 5.0, 5.0]))
    assert pad_to(image, 2, 3) is image
    assert pad_to(torch.zeros(2, 3, 1, 1), 8, 8).shape == (2, 3, 8, 8)
    with pytest.raises(ValueError, match="cannot pad"):
        pad_to(image, 1, 5)
    with pytest.raises(ValueError, match=r"\[C, H, W\]"):
        pad_to(torch.zeros(4, 4), 8, 8)


def _blend_untouched(image: torch.Tensor, tile: int, overlap: int) -> torch.Tensor:
    """Split ``image`` [C, H, W] into tiles and blend them back unchanged."""
    height, width = image.shape[-2:]
    padded = pad_to(image, *padded_size(height, width, tile))
    blender = TileBlender(height, width, tile, overlap, channels=image.shape[0])
    for box in tile_boxes(height, width, tile, overlap):
        blender.add(box.crop(padded), box)
    return blender.result()


@pytest.mark.parametrize("height, width", SIZES)
@pytest.mark.parametrize("tile, overlap", [(16, 0), (16, 4), (16, 15)])
def test_blending_untouched_tiles_is_identity(height, width, tile, overlap):
    image = torch.rand(3, height, width)
    result = _blend_untouched(image, tile, overlap)
    assert result.shape == image.shape
    assert (result - image).abs().max() < 1e-5


def test_blending_keeps_a_constant_image_constant():
    image = torch.full((3, 50, 37), 0.7)
    result = _blend_untouched(image, 16, 6)
    assert (result - 0.7).abs().max() < 1e-6


def test_blending_has_no_seams():
    """Tiles of two different constants blend into a transition no steeper than the ramp allows."""
    height, width, tile, overlap = 16, 24, 16, 8
    blender = TileBlender(height, width, tile, overlap, channels=1)
    left, right = tile_boxes(height, width, tile, overlap)  # columns [0, 16) and [8, 24)
    blender.add(torch.zeros(1, tile, tile), left)
    blender.add(torch.ones(1, tile, tile), right)
    row = blender.result()[0, tile // 2]
    assert bool((row[1:] >= row[:-1]).all())  # monotone, no step back at tile borders
    assert row[0] == 0 and row[-1] == 1
    assert (row[1:] - row[:-1]).max() < 0.25  # a raised cosine over 8 px rises at most ~0.2 per px


def test_blender_validates_tiles():
    blender = TileBlender(20, 20, 16, 4)
    with pytest.raises(ValueError, match="shape"):
        blender.add(torch.zeros(3, 8, 8), Box(0, 0, 16, 16))
    with pytest.raises(ValueError, match="outside"):
        blender.add(torch.zeros(3, 16, 16), Box(8, 8, 24, 24))
    blender.add(torch.zeros(3, 16, 16, dtype=torch.float64), Box(0, 0, 16, 16))  # dtype is converted
    with pytest.raises(ValueError, match="not covered"):
        blender.result()


@pytest.mark.parametrize(
    "width, height, scale, expected",
    [
        (127, 63, 4, (508, 252)),
        (127, 63, 2.5, (318, 158)),  # 317.5 and 157.5: halves round to even
        (125, 63, 2.5, (312, 158)),  # 312.5 -> 312
        (128, 128, 4.0, (512, 512)),
        (3, 1, 0.1, (1, 1)),  # never 0 px
        (1000, 750, 0.5, (500, 375)),
    ],
)
def test_output_size(width, height, scale, expected):
    assert output_size(width, height, scale) == expected


@pytest.mark.parametrize("scale", [0, -2, float("nan"), float("inf")])
def test_output_size_rejects_bad_scale(scale):
    with pytest.raises(ValueError, match="scale"):
        output_size(64, 64, scale)


def test_output_size_rejects_bad_size():
    with pytest.raises(ValueError, match="positive"):
        output_size(0, 64, 2)


def test_tile_count_is_the_number_of_tile_boxes_of_the_output():
    rng = np.random.default_rng(0)
    for _ in range(200):
        width, height = (int(v) for v in rng.integers(1, 400, 2))
        scale = float(rng.choice([0.5, 1.0, 2.0, 2.5, 4.0]))
        tile = int(rng.choice([32, 64, 128]))
        overlap = int(rng.integers(0, tile))
        out_w, out_h = output_size(width, height, scale)
        assert tile_count(width, height, scale, tile, overlap) == len(tile_boxes(out_h, out_w, tile, overlap))
