"""Where the reference's golden fixtures are, and what they name: read when tests are collected."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

PURE_TOP_K_BOUNDS = (1, 2000)
"""The entropy-adaptive top-k's (k_min, k_max) in PURE (the reference's defaults)."""

SHARED = Path(__file__).resolve().parents[2] / "shared"


def reference_folder() -> Path | None:
    """``$PURE_REFERENCE_DIR`` or ``../shared/reference`` (the golden fixtures), if present."""
    path = Path(os.environ.get("PURE_REFERENCE_DIR", SHARED / "reference"))
    return path if path.is_dir() else None


def fixture_names(relative: str, section: str | None, public: list[str]) -> list[str]:
    """The names a golden fixture's JSON lists (its top-level keys, or those of ``section``), so that another
    fixture set (``$PURE_REFERENCE_DIR``: other seeds and inputs in the same formats) is tested whole,
    whatever it names its images; ``public`` (the shared set's names) without fixtures (the tests skip)."""
    folder = reference_folder()
    if folder is None or not (folder / relative).is_file():
        return public
    listed = json.loads((folder / relative).read_text())
    return list(listed[section] if section else listed)


def require(folder: Path, *relative: str) -> Path:
    """``folder`` if it holds each of ``relative`` (files of the fixture set), else the test skips naming the
    first one missing: another set (``$PURE_REFERENCE_DIR``) may hold only some of the sub-fixtures."""
    for name in relative:
        if not (folder / name).is_file():
            pytest.skip(f"golden fixture {folder / name} not found: this fixture set lacks it")
    return folder


def entropy_rule_k(entropy: np.ndarray, k_min: int, k_max: int) -> np.ndarray:
    """README 4.4's adaptive k, read plainly: ``round(k_min + (k_max - k_min) * sigmoid(clip(H, 0, 10) - 5))``
    half to even, clamped to [k_min, k_max]."""
    weight = 1 / (1 + np.exp(-(np.clip(np.asarray(entropy, dtype=np.float64), 0, 10) - 5)))
    return np.clip(np.round(k_min + (k_max - k_min) * weight), k_min, k_max).astype(np.int64)


def fit_top_k_bounds(entropy: np.ndarray, k: np.ndarray) -> tuple[int, int] | None:
    """The (k_min, k_max) under which :func:`entropy_rule_k` gives ``k`` at every ``entropy`` of a table that
    reaches both clip ends (H <= 0 and H >= 10); PURE's when they fit too, None when none does."""
    k = np.asarray(k, dtype=np.int64)
    low, high, edge = int(k.min()), int(k.max()), 1 / (1 + math.exp(5))
    fits = []
    for total in range(low + high - 1, low + high + 2):
        first = math.floor((high - low - 1) / (1 - 2 * edge))
        for width in range(max(first, 0), math.ceil((high - low + 1) / (1 - 2 * edge)) + 1):
            k_min, k_max = (total - width) // 2, (total + width) // 2
            if (
                (total - width) % 2 == 0
                and k_min >= 1
                and np.array_equal(entropy_rule_k(entropy, k_min, k_max), k)
            ):
                fits.append((k_min, k_max))
    return PURE_TOP_K_BOUNDS if PURE_TOP_K_BOUNDS in fits else (fits[0] if fits else None)


def top_k_bounds(folder: Path, meta: dict | None = None) -> tuple[int, int]:
    """The (k_min, k_max) a fixture set's sampler ran with: ``min_top_k``/``max_top_k`` of ``meta`` (a
    fixture's JSON) or of ``sampler/sampler_states.json`` when they record them (the reference's argument
    names), else fitted to ``sampler/entropy_topk_table.npz``, else PURE's. Another set may use others."""
    states = folder / "sampler" / "sampler_states.json"
    for recorded in (meta or {}, json.loads(states.read_text()) if states.is_file() else {}):
        if "min_top_k" in recorded and "max_top_k" in recorded:
            return int(recorded["min_top_k"]), int(recorded["max_top_k"])
    table = folder / "sampler" / "entropy_topk_table.npz"
    if table.is_file():
        with np.load(table) as data:
            fitted = fit_top_k_bounds(data["entropy"], data["k"])
        if fitted is not None:
            return fitted
    return PURE_TOP_K_BOUNDS


def image_open_in_prompt(fixture, steps: int):
    """The quality guard's :class:`pure.quantize_quality.Fixture` with the trajectory's first ``steps``
    tokens moved into the prompt: the image is already open there (``n_prompt_hq_body_tokens`` > 0), and
    the trajectory is shorter, as another fixture set may make it."""
    tokens, kept = fixture.tokens, fixture.kept
    prompt = torch.cat([fixture.prompt, tokens[:steps]])
    return dataclasses.replace(fixture, prompt=prompt, tokens=tokens[steps:], kept=kept[steps:])


def other_weights(fixture, seed: int, folder: Path):
    """``fixture`` with the deterministic weights of another ``seed`` (written to ``folder``) and a
    trajectory our sampler draws from its prompt with that seed, as long as the stored one. Self-consistent
    only (the candidate counts are our own): it shows how the guard's numbers spread over weights."""
    from pure.generate import generate
    from pure.model import load_backbone
    from pure.tiny import det_state_dict, reference_backbone_shapes, write_backbone_checkpoint

    config = json.loads((fixture.folder / "config.json").read_text(encoding="utf-8"))
    write_backbone_checkpoint(folder, config, det_state_dict(reference_backbone_shapes(config), seed))
    sampling = dataclasses.replace(fixture.sampling, max_new_tokens=len(fixture.tokens))
    model = load_backbone(str(folder), dtype=torch.float32)
    drawn = generate(model, [fixture.prompt], fixture.vocab, sampling, seeds=[seed])
    return dataclasses.replace(fixture, folder=Path(folder), tokens=drawn.ids[0], kept=drawn.kept[0])
