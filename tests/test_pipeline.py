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
from tests.fakes import BlockVQ

ROOT = Path(__file__).resolve().parents[1]


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
    made = Restorer(model, tokenizer, vocab, BlockVQ(), cfg.sampling, cfg.restore)
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


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (
            np.zeros((16, 24, 3), np.uint8),
            r"got numpy\.ndarray of shape \(16, 24, 3\) uint8; Image\.fromarray",
        ),
        (torch.zeros(3, 16, 24), r"got torch\.Tensor of shape \(3, 16, 24\) torch\.float32"),
        ("photo.png", r"got str; .*pure\.images\.read_image\(path\) reads a file"),
        (Path("photo.png"), r"got pathlib\.\w*Path; "),
        ([[0, 0, 0]], r"got list; "),
    ],
)
def test_restore_names_the_image_it_expects(restorer, image, message):
    """A notebook's array, tensor or path was read as an image and failed deep inside with
    ``AttributeError: 'numpy.ndarray' object has no attribute 'width'``."""
    with pytest.raises(pipeline.RestoreArgumentError, match=r"^image: expected a PIL image, " + message):
        restorer.restore(image)
    assert restorer.calls == []


def test_restore_names_how_to_pass_what_read_image_returns(restorer, tmp_path):
    from pure.images import read_image

    _grey().save(tmp_path / "a.png")
    read = read_image(tmp_path / "a.png")
    with pytest.raises(
        TypeError, match=r"got pure\.images\.ReadImage; pass its \.rgb, and alpha=its \.alpha"
    ):
        restorer.restore(read)
    assert restorer.restore(read.rgb, alpha=read.alpha).image.size == (24, 16)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"seed": 1.5}, r"seed=1\.5: expected an integer"),
        ({"seed": "7"}, r"seed='7': expected an integer"),
        ({"seed": True}, r"seed=True: expected an integer"),
        ({"seed": 2**63}, r"seed=9223372036854775808: must be within \+-2\^62"),
        ({"caption": 5}, r"caption: expected a str \(or None\), got int"),
        (
            {"alpha": Image.new("RGB", (24, 16))},
            r"alpha: expected a mode L image of the image's size 24x16, got RGB",
        ),
        ({"alpha": Image.new("L", (10, 10))}, r"alpha: .* got L 10x10"),
        ({"alpha": np.zeros((16, 24), np.uint8)}, r"alpha: .* got numpy\.ndarray of shape \(16, 24\) uint8"),
    ],
)
def test_restore_refuses_bad_arguments_before_generating(restorer, arguments, message):
    """A wrong alpha failed only after every tile was generated (``illegal image mode`` in the blend), or was
    stretched to the image; 2**63 raised ``Overflow when unpacking long long``, 1.5 ran and was recorded."""
    with pytest.raises(pipeline.RestoreArgumentError, match=message):
        restorer.restore(_grey(), **arguments)
    assert restorer.calls == []


def test_a_numpy_seed_is_recorded_as_a_plain_int(restorer):
    import json

    result = restorer.restore(_grey(), seed=np.int64(3))
    assert restorer.calls == [[3]] and type(result.seed) is int
    assert json.loads(json.dumps(result.sidecar()))["seed"] == 3


def _blocks(levels: np.ndarray) -> np.ndarray:
    """Grey 8x8 blocks of ``levels`` (uint8): what the stand-in VQ restores exactly."""
    return np.kron(levels, np.ones((8, 8))).astype(np.uint8)


@pytest.mark.parametrize("mode", ["I;16", "I", "F", "L"])
def test_greyscale_images_of_any_depth_are_read_as_a_file_would_be(restorer, mode):
    """A 16-bit greyscale PIL image (``Image.fromarray`` of a uint16 array) came out white, a float one in 0-1
    black: Pillow's RGB conversion clips at 255."""
    grey = _blocks(np.array([[0, 64, 128], [192, 255, 32]]))
    values = {
        "I;16": grey.astype(np.uint16) * 257,
        "I": grey.astype(np.int32) * 257,
        "F": (grey / 255.0).astype(np.float32),
        "L": grey,
    }
    image = Image.fromarray(values[mode])
    assert image.mode == mode
    result = restorer.restore(image)
    assert result.image.mode == "RGB"
    assert np.abs(np.asarray(result.image).astype(int) - grey[..., None]).max() <= 1


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P"])
def test_a_transparent_image_keeps_its_alpha(restorer, mode):
    """An RGBA PIL image gave an RGB result (its transparency composited on white and dropped), though
    ``Restoration.image`` is documented as RGBA when the input has alpha."""
    grey = _blocks(np.array([[40, 200, 120]]))
    alpha = np.where(np.arange(24) < 8, 0, 255).astype(np.uint8)[None].repeat(8, 0)
    image = Image.fromarray(np.dstack([grey, grey, grey, alpha]), "RGBA")
    if mode == "LA":
        image = image.convert("LA")
    if mode == "P":
        image = Image.fromarray(grey, "L").convert("P")
        image.info["transparency"] = 40  # the palette index of level 40
    result = restorer.restore(image)
    assert result.image.mode == "RGBA"
    kept = np.asarray(result.image)
    assert (
        np.array_equal(kept[..., 3], alpha) or mode == "P" and np.array_equal(kept[..., 3] == 0, grey == 40)
    )
    assert np.abs(kept[:, 8:, 0].astype(int) - grey[:, 8:]).max() <= 1  # the opaque part restored as it was


def test_the_constructors_name_the_settings_they_expect(restorer):
    """``Restorer.from_config("configs/tiny.yaml")`` failed with ``AttributeError: 'str' object has no
    attribute 'device'``; ``with_settings(restore, sampling)`` (swapped) with an AttributeError deep in the
    budget check."""
    with pytest.raises(
        pipeline.RestoreArgumentError, match=r"^cfg: expected a pure\.config\.InferConfig, got str"
    ):
        Restorer.from_config("configs/tiny.yaml")
    with pytest.raises(
        pipeline.RestoreArgumentError,
        match=r"^sampling: expected a pure\.config\.SamplingConfig .* got pure\.config\.RestoreConfig$",
    ):
        restorer.with_settings(restorer.settings, restorer.sampling)


def test_an_output_larger_than_memory_is_refused_before_any_allocation(restorer, monkeypatch):
    """scripts/infer.py's plan refuses such an --outscale; from Python, restore went on to allocate the
    upsampled image and its canvases (hundreds of GiB at a large outscale: the kernel killed the notebook)."""
    import pure.plan

    def prepare_tiles(image):
        raise AssertionError("the upsampled image and its canvases were allocated")

    monkeypatch.setattr(pure.plan, "physical_memory", lambda: 2**30)
    monkeypatch.setattr(restorer, "prepare_tiles", prepare_tiles)
    restorer.settings.outscale = 1000.0  # 10 x 10 px -> 10,000 x 10,000 px: 2.2 GiB of canvases
    with pytest.raises(
        ConfigError,
        match=r"^restore\.outscale=1000\.0: the 10,000 x 10,000 px output needs more memory than this "
        r"machine has \(1 GiB\) for its canvases alone; pass a restore\.outscale below 668$",
    ):
        restorer.restore(_grey(10, 10))
    assert restorer.calls == []


@pytest.mark.slow
def test_the_readmes_python_example_runs(tmp_path, monkeypatch, capsys):
    """README's "Use from Python" example, as written, from a folder holding what it names: it writes the
    2x image, prints the texts and timings, and leaves torch's thread count as it was."""
    import re
    import shutil

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### Use from Python") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    (tmp_path / "data" / "samples").mkdir(parents=True)
    shutil.copy(ROOT / "data" / "samples" / "chip.png", tmp_path / "data" / "samples")
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 (the README's own example)
    assert Image.open(tmp_path / "chip_x2.png").size == (240, 240)
    assert capsys.readouterr().out.count("|") == 2
    assert namespace["restorer"].settings.outscale == 4 and torch.get_num_threads() == threads
