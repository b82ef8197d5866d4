"""Pre-tokenisation into shards (pure/data/prepare.py) and reading them back (pure/data/datasets.py)."""

from __future__ import annotations

import contextlib
import io
import json
import math
import re
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from pure.cli import prepare_main
from pure.config import PrepareConfig, load_config
from pure.data import prepare as prep
from pure.data.captions import (
    MissingDescriptionsError,
    append_manifest,
    read_manifest,
)
from pure.data.datasets import ShardDataset, collate
from pure.data.labels import (
    Label,
)
from pure.files import file_sha256, lock_folder

ROOT = Path(__file__).resolve().parents[1]
HQ_SIZE = 128  # small crops keep the tiny VQ fast; the pipeline is size-agnostic
MANIFEST = ROOT / "data" / "manifests" / "realsr-mini.jsonl"


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
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
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
    output = printed.getvalue()
    assert output.count("broken.png") == 1, output  # named once, as it happens; the summary counts it
    assert "1 skipped (each named above)" in output
    return hq, base / "out"


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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
    assert records[NAMES[0]]["sha256"] == file_sha256(changed)
    assert _by_key(out)[NAMES[0]] != full[NAMES[0]]

    changed.write_bytes(changed.read_bytes()[:1000])  # changed again, now unreadable: its old example goes
    broken = prep.prepare(_cfg(hq, out), progress=False)
    assert (broken.prepared, broken.up_to_date, broken.examples, len(broken.skipped)) == (0, 4, 4, 1)
    assert NAMES[0] not in {r["key"] for r in ShardDataset(out).records}

    with pytest.raises(prep.PrepareError, match="other seed settings"):
        prep.prepare(_cfg(hq, out, "seed=1"), progress=False)


@pytest.mark.parametrize("setting", ["backbone.adapter=runs/x/adapter", "backbone.quantize=int8"])
def test_backbone_weight_settings_are_refused_not_ignored(tmp_path, setting):
    """prepare_data.py reads only the tokenizer: a setting about the weights would do nothing."""
    key = setting.partition("=")[0]
    with pytest.raises(prep.PrepareError, match=rf"^{key}=.*reads only the backbone's tokenizer"):
        prep.prepare(_cfg(tmp_path / "hq", tmp_path / "out", setting), progress=False)
    assert not (tmp_path / "out").exists()


def test_an_out_dir_that_cannot_be_created_is_one_line(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(
        prep.PrepareError, match=r"out_dir=.*file/out cannot be written \(.*\); choose another"
    ):
        prep.check_settings(tmp_path / "file" / "out", load_config(PrepareConfig))


def _journal(out: Path) -> None:
    """One journal record whose shard exists: a folder that holds prepared tokens."""
    (out / "journal").mkdir(parents=True)
    (out / "shards").mkdir()
    (out / "shards" / "000-000000.safetensors").write_bytes(b"")
    record = {"key": "a.png", "written": 1, "shard": "000-000000.safetensors"}
    (out / "journal" / "rank-000.jsonl").write_text(json.dumps(record) + "\n")


def test_an_out_dir_whose_settings_are_lost_or_damaged_is_refused(tmp_path):
    """Tokens already there could not be checked against the new settings (nor another program's index)."""
    cfg = load_config(PrepareConfig, ROOT / "configs" / "prepare_tiny.yaml")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "index.jsonl").write_text("hi\n")
    with pytest.raises(
        prep.PrepareError, match=r"other holds index.jsonl but no prepare.yaml: not written by"
    ):
        prep.check_settings(tmp_path / "other", cfg)
    assert (tmp_path / "other" / "index.jsonl").read_text() == "hi\n"
    (tmp_path / "other" / "index.jsonl").write_text("")  # an earlier run's, every image skipped: no lock
    prep.check_settings(tmp_path / "other", cfg)
    _journal(tmp_path / "lost")
    with pytest.raises(prep.PrepareError, match=r"lost holds journal/ but no prepare.yaml"):
        prep.check_settings(tmp_path / "lost", cfg)
    _journal(tmp_path / "bad")
    for text, reason in (("seed: [\n", "cannot be read \\(ParserError"), ("- a\n", "is not the settings")):
        (tmp_path / "bad" / "prepare.yaml").write_text(text)
        with pytest.raises(prep.PrepareError, match=rf"bad/prepare.yaml {reason}.*; restore it$"):
            prep.check_settings(tmp_path / "bad", cfg)


def test_where_the_weights_lie_does_not_change_the_tokens_settings(tmp_path):
    """prepare.yaml records resolved weight paths: a rerun with --models or another cache is the same VQ."""
    hub = load_config(PrepareConfig, ROOT / "configs" / "prepare_x4.yaml", ["vq.source=/cache/vq_ds8_c2i.pt"])
    prep.check_settings(tmp_path / "out", hub)  # the first run records its settings
    _journal(tmp_path / "out")
    moved = load_config(PrepareConfig, ROOT / "configs" / "prepare_x4.yaml", ["vq.source=models/vq.pt"])
    prep.check_settings(tmp_path / "out", moved)  # not refused
    tiny = load_config(PrepareConfig, ROOT / "configs" / "prepare_tiny.yaml")
    with pytest.raises(prep.PrepareError, match=r"prepared with other vq, backbone settings"):
        prep.check_settings(tmp_path / "out", tiny)


def test_training_refuses_shards_of_another_vq_or_text_tokenizer(tmp_path):
    from pure.config import TrainConfig

    (tmp_path / "prepare.yaml").write_text(
        prep.to_yaml(load_config(PrepareConfig, ROOT / "configs" / "prepare_tiny.yaml"))
    )
    train = load_config(TrainConfig, ROOT / "configs" / "train_tiny_lora.yaml")
    prep.check_shards_match(tmp_path, train.vq, train.backbone)  # the shipped pair matches
    other = load_config(
        TrainConfig, ROOT / "configs" / "train_tiny_lora.yaml", ["vq.seed=7", "vq.channels=64"]
    )
    with pytest.raises(
        prep.PrepareError, match=r"prepared with another vq \(vq.channels, vq.seed differ; see "
    ):
        prep.check_shards_match(tmp_path, other.vq, other.backbone)
    real = load_config(TrainConfig, ROOT / "configs" / "train_lora_x4.yaml")
    with pytest.raises(prep.PrepareError, match=r"another vq \(vq.source differs; see .*other pixels"):
        prep.check_shards_match(tmp_path, real.vq, real.backbone)
    real_vq = load_config(
        TrainConfig, ROOT / "configs" / "train_tiny_lora.yaml", ["backbone.source=nonwhy/PURE"]
    )
    with pytest.raises(prep.PrepareError, match=r"another backbone \(backbone.source differs.*other words"):
        prep.check_shards_match(tmp_path, real_vq.vq, real_vq.backbone)
    (tmp_path / "prepare.yaml").unlink()
    prep.check_shards_match(tmp_path, real.vq, real.backbone)  # nothing recorded: nothing to check


@pytest.mark.parametrize("inner", ["hq/sub", "hq", "hq/./"])
def test_overlapping_hq_folders_are_refused(tmp_path, inner):
    """A folder inside another (or the same one twice) would prepare its images twice: one line."""
    (tmp_path / "hq" / "sub").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "hq" / "sub" / "a.png")
    with pytest.raises(prep.PrepareError, match=r"would be prepared twice .*; list only .*hq$"):
        prep.list_sources([str(tmp_path / "hq"), str(tmp_path / inner)])
    assert [s.key for s in prep.list_sources([str(tmp_path / "hq")])] == ["sub/a.png"]


def test_an_unwritable_or_full_out_dir_is_one_line(shared_data_dir, tmp_path, monkeypatch, capsys):
    """An existing folder that cannot be written (here /proc) is refused before any work; a disk that fills
    up while shards are written ends in one line (exit 1) saying how to continue."""
    with pytest.raises(prep.PrepareError, match=r"^out_dir=/proc cannot be written \(.*\); choose another"):
        prep.check_settings(Path("/proc"), load_config(PrepareConfig))
    hq = _sources(shared_data_dir, tmp_path / "hq", NAMES[:1])

    def full(*args, **kwargs):
        raise RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(prep, "save_file", full)
    args = ["--config", str(ROOT / "configs" / "prepare_tiny.yaml"), "--hq-dir", str(hq)]
    args += [
        "--out",
        str(tmp_path / "out"),
        "--manifest",
        str(MANIFEST),
        "--no-progress",
        f"hq_size={HQ_SIZE}",
    ]
    assert prepare_main(args) == 1
    err = capsys.readouterr().err
    assert (
        err.startswith(f"error: no space left on the device of out_dir={tmp_path / 'out'}")
        and err.count("\n") == 1
    )


def test_a_missing_manifest_or_a_file_as_hq_folder_is_one_line(shared_data_dir, tmp_path):
    """A manifest path with a typo is refused (with caption.allow_missing it would silently drop every
    description); a file given as an HQ folder is said to be a file."""
    hq = _sources(shared_data_dir, tmp_path / "hq", NAMES[:1])
    for extra in ([], ["caption.allow_missing=true"]):
        cfg = _cfg(hq, tmp_path / "out", f"caption.manifest={tmp_path / 'typo.jsonl'}", *extra)
        with pytest.raises(prep.PrepareError, match=r"caption.manifest=.*typo.jsonl does not exist"):
            prep.prepare(cfg, progress=False)
    for model in ("", "some/captioner"):  # a folder is never a manifest, whether read or written
        cfg = _cfg(hq, tmp_path / "out", f"caption.manifest={tmp_path}", f"caption.model={model}")
        with pytest.raises(
            prep.PrepareError, match=r"caption.manifest=.* is a folder; pass the descriptions"
        ):
            prep.prepare(cfg, progress=False)
    assert not (tmp_path / "out").exists()
    with pytest.raises(prep.PrepareError, match=r"HQ folder .*Canon_011_LR4.png is a file; pass the folder"):
        prep.list_sources([str(hq / NAMES[0])])
    with pytest.raises(prep.PrepareError, match=r"does not exist: pass --hq-dir DIR \(or hq_dirs=\[DIR\]\)$"):
        prep.list_sources([str(tmp_path / "nowhere")])  # absolute: no "run from the folder ..." hint


def test_missing_descriptions_stop_the_run_before_any_work(shared_data_dir, tmp_path):
    hq = _sources(shared_data_dir, tmp_path / "hq", NAMES[:2])
    manifest = tmp_path / "m.csv"
    append_manifest(manifest, {NAMES[0]: "Lanterns."})
    Image.new("RGB", (HQ_SIZE - 1, 300)).save(hq / "small.png")  # skipped for its size: no description needed
    one_line = re.escape(f"1 image(s) have no description in {manifest} ({NAMES[1]}); ")
    with pytest.raises(MissingDescriptionsError, match=one_line):
        prep.prepare(_cfg(hq, tmp_path / "out", f"caption.manifest={manifest}"), progress=False)
    # nothing was prepared there, so the refused run does not lock the folder to its settings
    prep.check_settings(tmp_path / "out", _cfg(hq, tmp_path / "out", "seed=1"))
    assert not (tmp_path / "out" / "shards").exists()


def test_a_run_that_fails_before_any_example_leaves_nothing(shared_data_dir, tmp_path, monkeypatch):
    """A captioning model that cannot load: no prepare.yaml and no out_dir are left behind; an out_dir that
    already held examples keeps its settings file."""
    from pure.data.captions import CaptionerError

    def cannot_load(cfg, device="cpu"):
        raise CaptionerError("cannot load the captioning model")

    monkeypatch.setattr(prep, "load_captioner", cannot_load)
    hq = _sources(shared_data_dir, tmp_path / "hq", NAMES[:1])
    manifest = tmp_path / "m.jsonl"
    cfg = _cfg(hq, tmp_path / "out", f"caption.manifest={manifest}", "caption.model=some/captioner")
    with pytest.raises(CaptionerError):
        prep.prepare(cfg, progress=False)
    assert not (tmp_path / "out").exists()
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "notes.txt").write_text("mine")
    with pytest.raises(CaptionerError):
        prep.prepare(_cfg(hq, tmp_path / "kept", f"caption.manifest={manifest}", "caption.model=x/y"), False)
    assert sorted(p.name for p in (tmp_path / "kept").iterdir()) == ["notes.txt"]


def test_a_run_that_skips_every_image_leaves_nothing(tmp_path, capsys):
    """Every image unusable: exit 1 naming them, and no prepare.yaml, empty journal/, shards/ or index.jsonl
    left behind (they locked nothing, but looked like a prepared folder)."""
    (tmp_path / "hq").mkdir()
    (tmp_path / "hq" / "broken.png").write_bytes(b"not a png")
    argv = ["--config", str(ROOT / "configs" / "prepare_tiny.yaml"), "--hq-dir", str(tmp_path / "hq")]
    code = prepare_main([*argv, "--out", str(tmp_path / "out"), "--no-progress", f"hq_size={HQ_SIZE}"])
    out = capsys.readouterr()
    assert code == 1 and "broken.png" in out.err + out.out
    assert (
        "0 images prepared, 0 already up to date, 1 skipped (each named above); no examples written"
        in out.out
    )
    assert not (tmp_path / "out").exists()


def test_a_second_run_into_the_same_out_dir_is_refused_while_the_first_runs(tmp_path, capsys):
    """Two runs into one out_dir at once took the same shard names (the later file won) while each run's
    journal pointed at its own rows of them: examples silently crossed between images."""
    (tmp_path / "hq").mkdir()
    Image.new("RGB", (HQ_SIZE, HQ_SIZE), "grey").save(tmp_path / "hq" / "a.png")
    out = tmp_path / "out"
    out.mkdir()
    first = lock_folder(out)
    argv = ["--config", str(ROOT / "configs" / "prepare_tiny.yaml"), "--hq-dir", str(tmp_path / "hq")]
    argv += ["--out", str(out), "--no-progress", f"hq_size={HQ_SIZE}", "caption.allow_missing=true"]
    assert prepare_main(argv) == 2
    assert capsys.readouterr().err == (
        f"error: out_dir={out} is in use by another prepare_data.py run (started twice?): wait for it to "
        "end, then run the command again (it adds what the first did not), or choose another out_dir\n"
    )
    assert list(out.iterdir()) == []  # not even its prepare.yaml
    first()
    assert prepare_main(argv) == 0  # the first run ended
    assert len(ShardDataset(out)) == 1
    again = lock_folder(out)
    assert again is not None  # released by the run
    again()


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


def test_a_data_loader_worker_that_dies_is_one_line_with_the_fix(
    shared_data_dir, tmp_path, monkeypatch, capsys
):
    """A worker killed while it degrades an image (memory, or Docker's 64 MB /dev/shm): one line naming
    `workers` and --shm-size, exit 1 (torch's RuntimeError traceback before)."""
    import os
    import signal

    import torch

    hq = _sources(shared_data_dir, tmp_path / "hq", NAMES[:1])

    def killed(self, index):
        if torch.utils.data.get_worker_info() is not None:
            os.kill(os.getpid(), signal.SIGKILL)

    monkeypatch.setattr(prep._Pairs, "__getitem__", killed)
    args = ["--config", str(ROOT / "configs" / "prepare_tiny.yaml"), "--hq-dir", str(hq), "--no-progress"]
    args += ["--out", str(tmp_path / "out"), "--manifest", str(MANIFEST), f"hq_size={HQ_SIZE}", "workers=1"]
    assert prepare_main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: a data-loader worker process died (") and err.count("\n") == 1
    assert "set workers lower (now 1;" in err and "--shm-size" in err
