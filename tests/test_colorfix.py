"""Colour fix: the wavelet and AdaIN fixes against the reference's golden pairs, plus edge cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from pure.colorfix import adain_color_fix, color_fix, wavelet_color_fix, wavelet_decompose
from tests.reference import fixture_names, require

PAIRS = fixture_names("colorfix/colorfix_meta.json", None, ["pair64", "pair80x48"])


def _tensor(array: np.ndarray) -> torch.Tensor:
    """[H, W, 3] uint8 -> [1, 3, H, W] float32 in [0, 1]."""
    return torch.from_numpy(array).permute(2, 0, 1)[None].float().div(255)


def _load(reference_dir, pair: str) -> dict[str, np.ndarray]:
    with np.load(require(reference_dir, f"colorfix/{pair}.npz") / "colorfix" / f"{pair}.npz") as npz:
        return dict(npz)


def _assert_uint8_close(actual: np.ndarray, expected: np.ndarray) -> None:
    """Equal, except +-1 on a tiny fraction of values where truncation boundaries may differ."""
    diff = np.abs(actual.astype(np.int16) - expected.astype(np.int16))
    assert actual.shape == expected.shape
    assert diff.max() <= 1
    assert (diff > 0).mean() <= 1e-3


@pytest.mark.parametrize("pair", PAIRS)
def test_decomposition_matches_reference(reference_dir, pair):
    data = _load(reference_dir, pair)
    high, low = wavelet_decompose(_tensor(data["target_uint8"]))
    torch.testing.assert_close(high[0], torch.from_numpy(data["target_high"]), rtol=0, atol=1e-5)
    torch.testing.assert_close(low[0], torch.from_numpy(data["target_low"]), rtol=0, atol=1e-5)


@pytest.mark.parametrize("pair", PAIRS)
def test_float_fixes_match_reference(reference_dir, pair):
    data = _load(reference_dir, pair)
    target, source = _tensor(data["target_uint8"]), _tensor(data["source_uint8"])
    wavelet = wavelet_color_fix(target, source)[0]
    adain = adain_color_fix(target, source)[0]
    torch.testing.assert_close(wavelet, torch.from_numpy(data["wavelet_float"]), rtol=0, atol=1e-5)
    torch.testing.assert_close(adain, torch.from_numpy(data["adain_float"]), rtol=0, atol=2e-6)


@pytest.mark.parametrize("pair", PAIRS)
@pytest.mark.parametrize("method", ["wavelet", "adain"])
def test_color_fix_images_match_reference(reference_dir, pair, method):
    data = _load(reference_dir, pair)
    pngs = [f"colorfix/{pair}_{part}.png" for part in ("target", "source", method)]
    folder = require(reference_dir, *pngs) / "colorfix"
    target = Image.open(folder / f"{pair}_target.png")
    source = Image.open(folder / f"{pair}_source.png")
    np.testing.assert_array_equal(np.asarray(target), data["target_uint8"])
    np.testing.assert_array_equal(np.asarray(source), data["source_uint8"])
    expected_png = np.asarray(Image.open(folder / f"{pair}_{method}.png"))
    np.testing.assert_array_equal(expected_png, data[f"{method}_uint8"])

    fixed = color_fix(target, source, method)
    assert fixed.mode == "RGB" and fixed.size == target.size
    _assert_uint8_close(np.asarray(fixed), data[f"{method}_uint8"])


def test_uint8_conversion_truncates():
    """The PIL output is floor(clamp(x, 0, 1) * 255) of the float fix, not a rounding of it."""
    rng = np.random.default_rng(1)
    target_array = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
    source_array = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
    scaled = wavelet_color_fix(_tensor(target_array), _tensor(source_array))[0].clamp(0, 1).mul(255)
    scaled = scaled.permute(1, 2, 0).numpy()
    fixed = np.asarray(color_fix(Image.fromarray(target_array), Image.fromarray(source_array), "wavelet"))
    np.testing.assert_array_equal(fixed, np.floor(scaled).astype(np.uint8))
    assert (np.rint(scaled) != np.floor(scaled)).mean() > 0.3  # rounding would have been caught


def test_high_plus_low_is_image():
    image = torch.rand(2, 3, 20, 30)
    high, low = wavelet_decompose(image)
    assert high.shape == low.shape == image.shape
    torch.testing.assert_close(high + low, image, rtol=0, atol=1e-5)


@pytest.mark.parametrize("size", [(1, 1), (8, 8), (5, 3), (16, 17)])
def test_tiny_images(size):
    """Replicate padding by 16 works on images smaller than the padding; constants stay constant."""
    rng = np.random.default_rng(0)
    target = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    source = Image.new("RGB", size, (200, 100, 50))
    fixed = color_fix(target, source, "wavelet")
    assert fixed.size == size
    high, low = wavelet_decompose(torch.full((1, 3, size[1], size[0]), 0.25))
    torch.testing.assert_close(low, torch.full_like(low, 0.25))
    torch.testing.assert_close(high, torch.zeros_like(high), rtol=0, atol=1e-6)
    adain = color_fix(target, source, "adain")
    assert adain.size == size
    if size == (1, 1):  # no variance: the normalised pixel is 0, so it takes the source's colour
        assert adain.getpixel((0, 0)) == (200, 100, 50)


def test_constant_target_takes_source_colour():
    target = Image.new("RGB", (24, 24), (10, 20, 30))
    source = Image.new("RGB", (24, 24), (200, 100, 50))
    fixed = np.asarray(color_fix(target, source, "wavelet")).astype(int)
    assert np.abs(fixed - np.array([200, 100, 50])).max() <= 1


def test_batch_is_per_image():
    target, source = torch.rand(2, 3, 12, 10), torch.rand(2, 3, 12, 10)
    for fix in (wavelet_color_fix, adain_color_fix):
        batched = fix(target, source)
        single = torch.cat([fix(target[i : i + 1], source[i : i + 1]) for i in range(2)])
        torch.testing.assert_close(batched, single)


def test_none_returns_target():
    target = Image.new("RGB", (8, 6), (1, 2, 3))
    source = Image.new("RGB", (8, 6), (9, 9, 9))
    assert color_fix(target, source, "none") is target


def test_non_rgb_inputs_are_converted():
    target = Image.new("L", (8, 8), 100)
    source = Image.new("RGBA", (8, 8), (100, 100, 100, 255))
    fixed = color_fix(target, source, "adain")
    assert fixed.mode == "RGB" and fixed.size == (8, 8)


def test_size_mismatch_is_an_error():
    target = Image.new("RGB", (16, 8))
    with pytest.raises(ValueError, match="resize the LQ image"):
        color_fix(target, Image.new("RGB", (8, 16)), "wavelet")
    with pytest.raises(ValueError, match="same shape"):
        wavelet_color_fix(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 9))


def test_unknown_method_lists_choices():
    image = Image.new("RGB", (8, 8))
    with pytest.raises(ValueError, match="wavelet, adain, none"):
        color_fix(image, image, "histogram")


def test_bad_tensor_is_an_error():
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        wavelet_decompose(torch.rand(3, 8, 8))
    with pytest.raises(ValueError, match="float"):
        adain_color_fix(
            torch.zeros(1, 3, 8, 8, dtype=torch.uint8), torch.zeros(1, 3, 8, 8, dtype=torch.uint8)
        )
