"""Where the reference's golden fixtures are, and what they name: read when tests are collected."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest
import torch

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
