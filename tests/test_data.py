"""Training data on real images: degradations, labels, descriptions, shards (resume, round trip), datasets."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pure.cli import prepare_main
from pure.config import CaptionConfig, DegradationConfig, LabelConfig, PrepareConfig, load_config
from pure.data import prepare as prep
from pure.data.captions import (
    ManifestError,
    MissingDescriptionsError,
    append_manifest,
    check_descriptions,
    describe_missing,
    load_captioner,
    read_manifest,
)
from pure.data.datasets import ShardDataset, collate
from pure.data.degradations import (
    Blur,
    DegradationParams,
    Noise,
    Resize,
    Stage,
    degrade,
    filter2d,
    kernel,
    usm_sharpen,
)
from pure.data.labels import (
    Label,
    label_from_params,
    level,
)

ROOT = Path(__file__).resolve().parents[1]
HQ_SIZE = 128  # small crops keep the tiny VQ fast; the pipeline is size-agnostic
MANIFEST = ROOT / "data" / "manifests" / "realsr-mini.jsonl"


def _hq(shared_data_dir: Path, name: str = "Canon_011_LR4.png", size: int = HQ_SIZE) -> torch.Tensor:
    image = Image.open(shared_data_dir / "realsr-mini" / "hr" / name).convert("RGB").crop((0, 0, size, size))
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1).contiguous()


# ----------------------------------------------------------------------------- degradations


def test_degrade_is_deterministic_under_a_seed(shared_data_dir):
    hq = _hq(shared_data_dir)
    cfg = DegradationConfig()
    lq1, p1 = degrade(hq, cfg, torch.Generator().manual_seed(7))
    torch.manual_seed(123)  # global state must not matter
    np.random.seed(5)
    lq2, p2 = degrade(hq, cfg, torch.Generator().manual_seed(7))
    assert torch.equal(lq1, lq2) and p1 == p2
    lq3, p3 = degrade(hq, cfg, torch.Generator().manual_seed(8))
    assert p3 != p1 and not torch.equal(lq1, lq3)
    assert lq1.shape == (3, HQ_SIZE // 4, HQ_SIZE // 4) and lq1.dtype == torch.float32
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
def test_every_branch_is_reachable(shared_data_dir, name, overrides, check):
    cfg = load_config(DegradationConfig, None, [f"{k}={json.dumps(v)}" for k, v in overrides.items()])
    hq = _hq(shared_data_dir)
    for seed in range(2):
        lq, params = degrade(hq, cfg, torch.Generator().manual_seed(seed))
        assert check(params), params
        assert lq.shape == (3, 32, 32) and torch.isfinite(lq).all()


@pytest.mark.parametrize("scale", [2, 3])
def test_any_integer_scale(shared_data_dir, scale):
    cfg = load_config(DegradationConfig, None, [f"scale={scale}"])
    lq, params = degrade(_hq(shared_data_dir, size=96), cfg, torch.Generator().manual_seed(0))
    assert lq.shape == (3, 96 // scale, 96 // scale) and params.scale == scale
    with pytest.raises(ValueError, match="not divisible"):
        degrade(_hq(shared_data_dir, size=97), cfg, torch.Generator())


def test_filters_match_basicsr(shared_data_dir):
    from basicsr.utils import USMSharp
    from basicsr.utils.img_process_util import filter2D

    hq = _hq(shared_data_dir)[None]
    assert (usm_sharpen(hq) - USMSharp()(hq)).abs().max() < 1e-3
    for blur in (
        Blur("aniso", 21, 2.0, 0.7, 0.4),
        Blur("sinc", 13, omega_c=1.0),
        Blur("plateau_iso", 9, 1.5, 1.5, 0, 1.2),
    ):
        k = kernel(blur)
        assert (filter2d(hq, k) - filter2D(hq, torch.from_numpy(k)[None])).abs().max() < 1e-5


# ----------------------------------------------------------------------------- labels


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


def test_labels_of_the_default_pipeline_spread_over_all_bins(shared_data_dir):
    hq = _hq(shared_data_dir)
    labels = [
        label_from_params(
            degrade(hq, DegradationConfig(), torch.Generator().manual_seed(s))[1], LabelConfig()
        )
        for s in range(24)
    ]
    assert {level(label.blur) for label in labels} == {"small", "medium", "large"}
    assert {level(label.noise) for label in labels} == {"small", "medium", "large"}


# ----------------------------------------------------------------------------- descriptions


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_manifest_round_trip(tmp_path, suffix):
    path = tmp_path / f"m{suffix}"
    assert read_manifest(path) == {}
    append_manifest(path, {"a.png": "A cat, sitting.", "sub/b.png": 'Quotes "and" commas, too.'})
    append_manifest(path, {"a.png": "A dog."})
    assert read_manifest(path) == {"a.png": "A dog.", "sub/b.png": 'Quotes "and" commas, too.'}


def test_manifest_errors_name_the_file(tmp_path):
    bad = tmp_path / "m.jsonl"
    bad.write_text('{"image": "a.png", "description": "ok"}\n{"image": "b.png"}\n')
    with pytest.raises(ManifestError, match=r"m.jsonl:2"):
        read_manifest(bad)
    (tmp_path / "m.csv").write_text("file,text\na,b\n")
    with pytest.raises(ManifestError, match="image,description"):
        read_manifest(tmp_path / "m.csv")


def test_descriptions_are_batched_and_cached(shared_data_dir, tmp_path):
    hr = shared_data_dir / "realsr-mini" / "hr"
    images = {p.name: p for p in sorted(hr.glob("*.png"))[:5]}
    manifest = tmp_path / "m.jsonl"
    append_manifest(manifest, {"Canon_001_LR4.png": "Given."})
    calls = []

    def captioner(batch):
        calls.append(len(batch))
        return ["" if len(calls) == 1 and i == 0 else f"Image {i}." for i in range(len(batch))]

    new = describe_missing(images, manifest, captioner, batch_size=2, progress=False)
    assert calls == [2, 2] and len(new) == 3  # one answer was empty: not stored, still missing
    assert describe_missing(images, manifest, captioner, batch_size=2, progress=False) == {
        sorted(images)[1]: "Image 0."
    }
    assert calls == [2, 2, 1]
    assert describe_missing(images, manifest, captioner, batch_size=2, progress=False) == {}
    assert calls == [2, 2, 1] and len(read_manifest(manifest)) == 5


def test_missing_descriptions_are_listed_unless_allowed():
    with pytest.raises(MissingDescriptionsError, match=r"2 images .*\n  b.png\n  c.png"):
        check_descriptions(["a.png", "b.png", "c.png"], {"a.png": "A."}, CaptionConfig(manifest="m.jsonl"))
    check_descriptions(["a.png", "b.png"], {}, CaptionConfig(allow_missing=True))


def _tiny_blip(folder: Path) -> Path:
    """A random BLIP captioner whose decoder always writes 'cat' (transformers loads it from the folder)."""
    from transformers import (
        BertTokenizer,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
    )

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", "a", "photo", "of", "cat"]
    tokenizer = BertTokenizer(vocab={word: i for i, word in enumerate(words)}, bos_token="[DEC]")
    vision = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "image_size": 32,
        "patch_size": 16,
    }
    text = {
        "vocab_size": len(words),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "bos_token_id": 5,
        "pad_token_id": 0,
        "sep_token_id": 3,
        "eos_token_id": 3,
    }
    torch.manual_seed(0)
    model = BlipForConditionalGeneration(
        BlipConfig(vision_config=vision, text_config=text, projection_dim=32)
    )
    with torch.no_grad():
        model.text_decoder.cls.predictions.bias[9] = 100.0
    model.save_pretrained(folder)
    BlipProcessor(BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer).save_pretrained(folder)
    return folder


def test_captioning_model_from_a_local_folder(shared_data_dir, tmp_path):
    cfg = CaptionConfig(
        model=str(_tiny_blip(tmp_path / "blip")), prompt="a photo of", max_new_tokens=3, batch_size=2
    )
    captioner = load_captioner(cfg)
    images = [
        Image.open(p).convert("RGB")
        for p in sorted((shared_data_dir / "realsr-mini" / "hr").glob("*.png"))[:3]
    ]
    assert captioner(images) == ["cat cat cat"] * 3
    with pytest.raises(ValueError, match="captioning model"):
        load_captioner(CaptionConfig(model=str(tmp_path / "nothing")))


# ----------------------------------------------------------------------------- pre-tokenisation


def _sources(shared_data_dir: Path, folder: Path, names: list[str]) -> Path:
    folder.mkdir(parents=True)
    for name in names:
        shutil.copy(shared_data_dir / "realsr-mini" / "hr" / name, folder / name)
    return folder


def _cfg(hq: Path, out: Path, *extra: str) -> PrepareConfig:
    return load_config(
        PrepareConfig,
        ROOT / "configs" / "prepare_tiny.yaml",
        [
            f"hq_dirs=[{hq}]",
            f"out_dir={out}",
            f"hq_size={HQ_SIZE}",
            "shard_size=2",
            "batch_size=2",
            f"caption.manifest={MANIFEST}",
            *extra,
        ],
    )


def _by_key(folder: Path) -> dict[str, tuple[list[int], list[int]]]:
    ds = ShardDataset(folder)
    keys = [r["key"] for r in ds.records]
    assert len(keys) == len(set(keys))
    return {r["key"]: (ds[i]["ids"].tolist(), ds[i]["labels"].tolist()) for i, r in enumerate(ds.records)}


NAMES = [
    "Canon_011_LR4.png",
    "Canon_031_LR4.png",
    "Nikon_001_LR4.png",
    "Nikon_041_LR4.png",
    "Canon_001_LR4.png",
]


@pytest.fixture(scope="module")
def prepared(shared_data_dir, tmp_path_factory):
    """One uninterrupted run through the script's entry point, with a broken file among the images."""
    base = tmp_path_factory.mktemp("prepared")
    hq = _sources(shared_data_dir, base / "hq", NAMES)
    (hq / "broken.png").write_bytes(b"not a png")
    code = prepare_main(
        [
            "--config",
            str(ROOT / "configs" / "prepare_tiny.yaml"),
            "--hq-dir",
            str(hq),
            "--out",
            str(base / "out"),
            "--manifest",
            str(MANIFEST),
            "--no-progress",
            f"hq_size={HQ_SIZE}",
            "shard_size=2",
            "batch_size=2",
        ]
    )
    assert code == 1  # one image skipped
    return hq, base / "out"


def test_prepare_writes_shards_labels_and_descriptions(prepared, capsys):
    hq, out = prepared
    records = [json.loads(line) for line in (out / "index.jsonl").read_text().splitlines()]
    assert [r["key"] for r in records] == sorted(NAMES)
    manifest = read_manifest(MANIFEST)
    for r in records:
        assert r["description"] == manifest[r["key"]] and len(r["sha256"]) == 64
        assert r["label"] == Label(r["blur"], r["noise"]).text
        assert r["degradation"]["scale"] == 4 and r["crop"][2] == HQ_SIZE
        assert r["source"] == str(hq / r["key"])
    assert len(list((out / "shards").glob("*.safetensors"))) == 3  # 5 examples, 2 per shard
    ds = ShardDataset(out)
    assert ds.lengths == [r["length"] for r in records]


def test_shard_round_trip_equals_in_memory_sequences(prepared):
    from pure.model import load_tokenizer, load_vocab
    from pure.pipeline import backbone_folder
    from pure.sequence import conversation
    from pure.vq import load_vq

    hq, out = prepared
    cfg = _cfg(hq, out)
    folder = backbone_folder(cfg.backbone)
    tokenizer = load_tokenizer(str(folder))
    vocab, vq = load_vocab(tokenizer, str(folder)), load_vq(cfg.vq.source, cfg=cfg.vq)
    manifest = read_manifest(cfg.caption.manifest)
    stored = _by_key(out)
    for source in prep.list_sources([str(hq)])[:3]:
        pair = prep.make_pair(source, cfg)
        codes = vq.encode(torch.stack(prep.vq_inputs(pair)))
        ids, labels = conversation(
            tokenizer, vocab, codes[0], f"{pair.label.text} {manifest[source.key]}", codes[1]
        )
        assert stored[source.key] == (ids.tolist(), labels.tolist())


def test_resumed_run_equals_uninterrupted_run(prepared, shared_data_dir, tmp_path, monkeypatch):
    hq_full, out_full = prepared
    hq = _sources(shared_data_dir, tmp_path / "hq", NAMES)
    out = tmp_path / "out"
    real = prep.make_pair
    calls = []

    def interrupted(source, cfg):
        calls.append(source.key)
        if len(calls) == 4:  # after the first shard of two, in the middle of the second
            raise KeyboardInterrupt
        return real(source, cfg)

    monkeypatch.setattr(prep, "make_pair", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prep.prepare(_cfg(hq, out), progress=False)
    monkeypatch.setattr(prep, "make_pair", real)
    assert len(prep.read_journals(out)) == 2
    summary = prep.prepare(_cfg(hq, out), progress=False)
    assert (summary.prepared, summary.up_to_date, summary.skipped) == (3, 2, [])
    full = _by_key(out_full)
    assert _by_key(out) == full

    again = prep.prepare(_cfg(hq, out), progress=False)  # a second run does nothing
    assert (again.prepared, again.up_to_date, again.examples) == (0, 5, 5)

    changed = hq / NAMES[0]
    Image.open(changed).rotate(90).save(changed)
    redo = prep.prepare(_cfg(hq, out), progress=False)
    assert (redo.prepared, redo.up_to_date, redo.examples) == (1, 4, 5)
    records = {r["key"]: r for r in ShardDataset(out).records}
    assert records[NAMES[0]]["sha256"] == prep.file_sha256(changed)
    assert _by_key(out)[NAMES[0]] != full[NAMES[0]]

    with pytest.raises(prep.PrepareError, match="other seed settings"):
        prep.prepare(_cfg(hq, out, "seed=1"), progress=False)


def test_missing_descriptions_stop_the_run_before_any_work(shared_data_dir, tmp_path):
    hq = _sources(shared_data_dir, tmp_path / "hq", NAMES[:2])
    manifest = tmp_path / "m.csv"
    append_manifest(manifest, {NAMES[0]: "Lanterns."})
    with pytest.raises(MissingDescriptionsError, match=NAMES[1]):
        prep.prepare(_cfg(hq, tmp_path / "out", f"caption.manifest={manifest}"), progress=False)
    assert not (tmp_path / "out" / "shards").exists()


# ----------------------------------------------------------------------------- datasets


def test_collate_truncates_and_pads():
    batch = collate(
        [
            {"ids": torch.tensor([1, 2, 3]), "labels": torch.tensor([-100, 2, 3])},
            {"ids": torch.tensor([4]), "labels": torch.tensor([4])},
        ],
        pad_id=0,
    )
    assert batch["ids"].tolist() == [[1, 2, 3], [4, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 2, 3], [4, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


@pytest.mark.parametrize("name", ["prepare_tiny.yaml", "prepare_x4.yaml"])
def test_shipped_configs_fit_the_schema(name):
    cfg = load_config(PrepareConfig, ROOT / "configs" / name)
    assert cfg.hq_size % 32 == 0 and math.isclose(cfg.hq_size / cfg.degradation.scale, 128)
