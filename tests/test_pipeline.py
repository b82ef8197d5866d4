"""The library entry point :class:`pure.pipeline.Restorer` as a notebook uses it: settings and arguments are
checked before any generation (fast: a stand-in model, VQ and generation)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import pure.pipeline as pipeline
from pure.config import ConfigError, InferConfig, load_config
from pure.generate import Generation
from pure.pipeline import Restorer
from pure.tiny import synthetic_vocabulary, tiny_tokenizer
from pure.vocab import Vocab

ROOT = Path(__file__).resolve().parents[1]


class _GreyVQ(torch.nn.Module):
    """A stand-in VQ exact on grey 8x8 blocks: code = grey level."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        grey = (images[:, 0] + 1) / 2 * 255
        return torch.nn.functional.avg_pool2d(grey[:, None], 8)[:, 0].round().long()

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        grey = (codes.float() + 0.5) / 255 * 2 - 1
        return grey[:, None].repeat_interleave(8, 2).repeat_interleave(8, 3).expand(-1, 3, -1, -1)


@pytest.fixture
def restorer(monkeypatch) -> Restorer:
    """A restorer whose model answers each tile with its own input block; ``restorer.calls`` counts the
    generations."""
    vocab = Vocab.from_names(synthetic_vocabulary(), bos=0)
    tokenizer = tiny_tokenizer()
    calls = []

    def echo(model, prompts, vocab, sampling, **kwargs):
        calls.append(kwargs["seeds"])
        text = torch.tensor(tokenizer.encode("Small blur, small noise. Squares.", add_special_tokens=False))
        answers = []
        for prompt in prompts:
            start = int((prompt == vocab.image_start).nonzero()[0])
            end = int((prompt == vocab.image_end).nonzero()[0])
            answers.append(
                torch.cat([text, prompt[start : end + 1].cpu(), torch.tensor([vocab.end_of_turn])])
            )
        zeros = [torch.zeros(len(a)) for a in answers]
        return Generation(answers, zeros, [torch.ones(len(a), dtype=torch.long) for a in answers], zeros)

    monkeypatch.setattr(pipeline, "generate", echo)
    cfg = load_config(
        InferConfig,
        ROOT / "configs" / "tiny.yaml",
        ["restore.tile=32", "restore.tile_overlap=0", "restore.outscale=1", "restore.color_fix=none"],
    )
    model = type("Model", (), {"device": torch.device("cpu"), "config": None, "dtype": torch.float32})()
    made = Restorer(model, tokenizer, vocab, _GreyVQ(), cfg.sampling, cfg.restore)
    made.calls = calls
    return made


def _grey(width: int = 24, height: int = 16) -> Image.Image:
    return Image.fromarray(np.full((height, width, 3), 96, dtype=np.uint8))


@pytest.mark.parametrize(
    ("section", "change", "message"),
    [
        ("sampling", {"temperature": 0.0}, r"sampling\.temperature=0\.0: must be at least"),
        ("sampling", {"cfg_scale": -1.0}, r"sampling\.cfg_scale=-1\.0: must be at least 0"),
        ("sampling", {"max_new_tokens": 10}, r"sampling\.max_new_tokens=10: a 32 px tile's answer"),
        ("restore", {"color_fix": "foo"}, r"restore\.color_fix='foo': expected one of wavelet"),
        ("restore", {"batch_size": 0}, r"restore\.batch_size=0: must be at least 1"),
        ("restore", {"tile": 100}, r"restore\.tile=100: must be a multiple of 32"),
        ("restore", {"speculative": "jacobi", "draft_len": 10**6}, r"restore\.draft_len=1000000: a 32 px"),
    ],
)
def test_settings_the_schema_refuses_are_refused_before_generating(restorer, section, change, message):
    """Settings made in Python (with_settings, or changed on the restorer between calls) are checked as a
    config file's are: a bad colour fix failed only after every tile was generated, a huge draft_len tried to
    allocate 16 GB, a temperature of 0 ran."""
    sampling, restore = restorer.sampling, restorer.settings
    if section == "sampling":
        sampling = dataclasses.replace(sampling, **change)
    else:
        restore = dataclasses.replace(restore, **change)
    with pytest.raises(ConfigError, match=message):
        restorer.with_settings(sampling, restore)
    restorer.sampling, restorer.settings = sampling, restore  # changed on the object between calls
    with pytest.raises(ConfigError, match=message):
        restorer.restore(_grey())
    assert restorer.calls == []


def test_settings_changed_between_calls_apply(restorer):
    first = restorer.restore(_grey(), seed=5)
    restorer.settings.outscale = 2.0
    second = restorer.restore(_grey(), seed=5)
    assert first.image.size == (24, 16) and second.image.size == (48, 32)


def test_from_config_checks_the_answer_budget_before_loading(monkeypatch):
    def load(*args, **kwargs):
        raise AssertionError("the backbone was loaded")

    monkeypatch.setattr(pipeline, "load_backbone", load)
    cfg = load_config(
        InferConfig, ROOT / "configs" / "tiny.yaml", ["restore.tile=512"]
    )  # 2048 tokens: too few
    with pytest.raises(ConfigError, match=r"sampling\.max_new_tokens=2048: a 512 px tile's answer"):
        Restorer.from_config(cfg)
