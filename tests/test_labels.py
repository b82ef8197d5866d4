"""Degradation labels from drawn parameters (pure/data/labels.py)."""

from __future__ import annotations

import pytest
import torch

from pure.config import DegradationConfig, LabelConfig
from pure.data.degradations import (
    Blur,
    DegradationParams,
    Noise,
    Resize,
    Stage,
    degrade,
)
from pure.data.labels import (
    Label,
    label_from_params,
    level,
)


def test_label_bins_and_sentence():
    assert [level(x) for x in (0.0, 0.3333, 1 / 3, 0.5, 0.6666, 2 / 3, 1.0)] == [
        "small",
        "small",
        "medium",
        "medium",
        "medium",
        "large",
        "large",
    ]
    assert Label(0.5, 0.1).text == "Medium blur, small noise."
    assert Label(0.9, 0.7).text == "Large blur, large noise."


def _params(
    blur1: Blur | None = None,
    blur2: Blur | None = None,
    noise1: float = 0.0,
    noise2: float = 0.0,
    factor1: float = 1.0,
) -> DegradationParams:
    """A 128 px HQ -> 32 px LQ degradation with only the given blurs, noise stds and first resize."""
    first = Resize("down" if factor1 < 1 else "keep", factor1, "bicubic", [round(128 * factor1)] * 2)
    second = Resize("keep", 1.0, "bicubic", [32, 32])
    return DegradationParams(
        4,
        [128, 128],
        False,
        Stage(blur1, first, Noise("gaussian", noise1, False, noise1), 95),
        Stage(blur2, second, Noise("gaussian", noise2, False, noise2), 95),
        "area",
        None,
        True,
    )


def test_label_from_params_measures_the_lq_image():
    cfg = LabelConfig()
    assert label_from_params(_params(), cfg) == Label(0.0, 0.0)
    weak, strong = (label_from_params(_params(blur2=Blur("iso", 21, s, s)), cfg).blur for s in (1.0, 3.0))
    assert 0 <= weak < strong
    # a kernel at the HQ size blurs the LQ less than the same kernel after a downscale to 1/2
    k = Blur("iso", 21, 3.0, 3.0)
    at_hq = label_from_params(_params(blur1=k), cfg).blur
    assert at_hq < label_from_params(_params(blur2=k, factor1=0.5), cfg).blur
    # a detour below the LQ size blurs even without kernels
    assert (
        label_from_params(_params(factor1=0.25), cfg).blur
        == 0
        < label_from_params(_params(factor1=0.125), cfg).blur
    )
    # noise added at the HQ size is partly averaged away by the 4x downscale
    hq_noise, lq_noise = (
        label_from_params(_params(noise1=8.0), cfg).noise,
        label_from_params(_params(noise2=8.0), cfg).noise,
    )
    assert 0 < hq_noise < lq_noise == pytest.approx((8.0 - 0.5) / 14)
    assert label_from_params(_params(noise2=20.0), LabelConfig(noise_range=[0.0, 1.0])).noise == 1.0


def test_labels_of_the_default_pipeline_spread_over_all_bins(hq_crop):
    hq = hq_crop()
    labels = [
        label_from_params(
            degrade(hq, DegradationConfig(), torch.Generator().manual_seed(s))[1], LabelConfig()
        )
        for s in range(24)
    ]
    assert {level(label.blur) for label in labels} == {"small", "medium", "large"}
    assert {level(label.noise) for label in labels} == {"small", "medium", "large"}
