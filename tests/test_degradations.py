"""Real-ESRGAN's second-order degradation (pure/data/degradations.py) on real images."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from pure.config import ConfigError, DegradationConfig, load_config
from pure.data.degradations import (
    Blur,
    check_degradation,
    degrade,
    filter2d,
    kernel,
    usm_sharpen,
)


def test_degrade_is_deterministic_under_a_seed(hq_crop):
    hq = hq_crop()
    cfg = DegradationConfig()
    lq1, p1 = degrade(hq, cfg, torch.Generator().manual_seed(7))
    torch.manual_seed(123)  # global state must not matter
    np.random.seed(5)
    lq2, p2 = degrade(hq, cfg, torch.Generator().manual_seed(7))
    assert torch.equal(lq1, lq2) and p1 == p2
    lq3, p3 = degrade(hq, cfg, torch.Generator().manual_seed(8))
    assert p3 != p1 and not torch.equal(lq1, lq3)
    assert lq1.shape == (3, hq.shape[1] // 4, hq.shape[2] // 4) and lq1.dtype == torch.float32
    assert 0 <= lq1.min() and lq1.max() <= 1 and torch.equal(lq1, (lq1 * 255).round() / 255)
    json.dumps(p1.to_dict())  # the index stores the parameters as JSON


def _one_hot(n: int, i: int) -> list[float]:
    return [1.0 if j == i else 0.0 for j in range(n)]


KINDS = ["iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso"]


def _branches() -> list[tuple[str, dict, object]]:
    """(name, DegradationConfig overrides, check on the drawn parameters) for every branch."""
    cases = []
    for i, kind in enumerate(KINDS):
        cases.append(
            (
                kind,
                {"first.kernel_prob": _one_hot(6, i), "first.sinc_prob": 0.0},
                lambda p, kind=kind: p.first.blur.kind == kind,
            )
        )
    cases.append(
        (
            "sinc blur",
            {"first.sinc_prob": 1.0, "second.sinc_prob": 1.0, "second.blur_prob": 1.0},
            lambda p: p.first.blur.kind == "sinc" == p.second.blur.kind,
        )
    )
    cases.append(
        (
            "no blurs",
            {"first.blur_prob": 0.0, "second.blur_prob": 0.0, "final_sinc_prob": 0.0},
            lambda p: p.first.blur is None and p.second.blur is None and p.final_sinc is None,
        )
    )
    for i, direction in enumerate(["up", "down", "keep"]):
        cases.append(
            (
                f"resize {direction}",
                {"first.resize_prob": _one_hot(3, i), "second.resize_prob": _one_hot(3, i)},
                lambda p, d=direction: p.first.resize.direction == d == p.second.resize.direction,
            )
        )
    for mode in ["area", "bilinear", "bicubic"]:
        cases.append(
            (
                f"mode {mode}",
                {"resize_modes": [mode]},
                lambda p, m=mode: p.first.resize.mode == p.second.resize.mode == p.final_resize_mode == m,
            )
        )
    for gaussian in (1.0, 0.0):
        for gray in (1.0, 0.0):
            kind = "gaussian" if gaussian else "poisson"
            cases.append(
                (
                    f"{kind} gray={gray}",
                    {
                        "first.gaussian_noise_prob": gaussian,
                        "second.gaussian_noise_prob": gaussian,
                        "first.gray_noise_prob": gray,
                        "second.gray_noise_prob": gray,
                    },
                    lambda p, k=kind, g=bool(gray): (
                        (p.first.noise.kind, p.first.noise.gray, p.second.noise.kind, p.second.noise.gray)
                        == (k, g, k, g)
                    ),
                )
            )
    for first in (1.0, 0.0):
        cases.append(
            (
                f"sinc before jpeg={first}",
                {"final_sinc_prob": 1.0, "sinc_before_jpeg_prob": first},
                lambda p, f=bool(first): p.final_sinc is not None and p.sinc_before_jpeg == f,
            )
        )
    cases.append(("no usm", {"usm_sharpen": False}, lambda p: not p.usm_sharpen))
    return cases


@pytest.mark.parametrize("name, overrides, check", _branches(), ids=[c[0] for c in _branches()])
def test_every_branch_is_reachable(hq_crop, name, overrides, check):
    cfg = load_config(DegradationConfig, None, [f"{k}={json.dumps(v)}" for k, v in overrides.items()])
    check_degradation(cfg)  # every setting a branch needs passes the up-front check
    hq = hq_crop()
    for seed in range(2):
        lq, params = degrade(hq, cfg, torch.Generator().manual_seed(seed))
        assert check(params), params
        assert lq.shape == (3, 32, 32) and torch.isfinite(lq).all()


@pytest.mark.parametrize(
    "override, message",
    [
        ("first.kernel_prob=[0.5,0.5]", r"first.kernel_prob=\[0.5, 0.5\]: expected 6 probabilities"),
        ("second.kernel_list=[iso,box]", r"second.kernel_list=.*box is not one of iso, aniso"),
        ("first.kernel_prob=[0,0,0,0,0,0]", "with a positive sum"),
        ("first.resize_prob=[0.5,0.5]", "expected 3 probabilities"),
        (
            "first.blur_sigma=[3.0,0.2]",
            r"first.blur_sigma=\[3.0, 0.2\]: expected \[low, high\] with low <= high",
        ),
        ("second.jpeg_range=[30,120]", r"second.jpeg_range=\[30.0, 120.0\]: must lie within \[1, 100\]"),
        ("first.resize_range=[1.2,1.5]", "must hold 1"),
        ("first.noise_range=[-1,3]", "must lie within"),
        ("second.blur_prob=1.5", r"second.blur_prob=1.5: a probability must lie in \[0, 1\]"),
        ("final_sinc_prob=-0.1", "final_sinc_prob"),
        ("kernel_sizes=[7,8]", "expected odd sizes"),
        ("resize_modes=[area,lanczos]", "lanczos is not one of area"),
        ("resize_modes=[]", r"\(none\) is not one of"),
    ],
)
def test_bad_settings_are_refused_before_any_draw(override, message):
    cfg = load_config(DegradationConfig, None, [override])
    with pytest.raises(ConfigError, match=message) as caught:
        check_degradation(cfg)
    assert str(caught.value).startswith(f"degradation.{override.partition('=')[0]}=")


def test_a_bad_degradation_stops_prepare_before_the_out_dir(tmp_path):
    from pure.config import PrepareConfig
    from pure.data.prepare import prepare

    (tmp_path / "hq").mkdir()
    Image.new("RGB", (64, 64)).save(tmp_path / "hq" / "a.png")
    cfg = load_config(
        PrepareConfig,
        None,
        [
            f"hq_dirs=[{tmp_path / 'hq'}]",
            f"out_dir={tmp_path / 'out'}",
            "degradation.second.jpeg_range=[0,101]",
        ],
    )
    with pytest.raises(ConfigError, match="degradation.second.jpeg_range"):
        prepare(cfg, progress=False)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("scale", [2, 3])
def test_any_integer_scale(hq_crop, scale):
    cfg = load_config(DegradationConfig, None, [f"scale={scale}"])
    lq, params = degrade(hq_crop(size=96), cfg, torch.Generator().manual_seed(0))
    assert lq.shape == (3, 96 // scale, 96 // scale) and params.scale == scale
    with pytest.raises(ValueError, match="not divisible"):
        degrade(hq_crop(size=97), cfg, torch.Generator())


def test_filters_match_basicsr(hq_crop):
    from basicsr.utils import USMSharp
    from basicsr.utils.img_process_util import filter2D

    hq = hq_crop()[None]
    assert (usm_sharpen(hq) - USMSharp()(hq)).abs().max() < 1e-3
    for blur in (
        Blur("aniso", 21, 2.0, 0.7, 0.4),
        Blur("sinc", 13, omega_c=1.0),
        Blur("plateau_iso", 9, 1.5, 1.5, 0, 1.2),
    ):
        k = kernel(blur)
        assert (filter2d(hq, k) - filter2D(hq, torch.from_numpy(k)[None])).abs().max() < 1e-5
