"""The trainer on CPU with the tiny backbone: what trains, resume, checkpoints, merge, shipped configs."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import re
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file

from pure.checkpoint import find_resume, merge_adapter, save_checkpoint
from pure.cli import infer_main, merge_main, prepare_main, train_main
from pure.config import BackboneConfig, ConfigError, OptimConfig, TrainConfig, load_config, to_yaml
from pure.data.datasets import DataError, ShardDataset, collate
from pure.errors import DiskFullError, PureError, WorkerDiedError
from pure.files import lock_folder, plain_mode
from pure.model import CheckpointError, backbone_folder, load_backbone
from pure.sequence import IGNORE_INDEX
from pure.tiny import (
    SECOND_IMAGE_ID,
    TINY_VOCAB_SIZE,
    det_state_dict,
    reference_backbone_shapes,
    synthetic_vocabulary,
    tiny_backbone_config,
    write_backbone_checkpoint,
)
from pure.train import (
    RUN_CONFIG_HEADER,
    DivergedError,
    add_residual_dropout,
    apply_lora,
    check_lengths,
    check_resumable,
    learning_rate,
    schedule_change,
    train,
    warmup_notice,
)
from pure.vocab import IMAGE_PREFIX

ROOT = Path(__file__).resolve().parents[1]
TINY_LORA = ROOT / "configs" / "train_tiny_lora.yaml"
TINY_FULL = ROOT / "configs" / "train_tiny_full.yaml"
SHARED_HR = Path(os.environ.get("PURE_SHARED_DATA", ROOT.parent / "shared" / "data")) / "realsr-mini" / "hr"


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    """Each ``train()`` builds its own Accelerator; accelerate keeps process-wide singletons."""
    from accelerate.state import AcceleratorState, GradientState

    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


@pytest.fixture(scope="module")
def hq_folder(tmp_path_factory) -> Path:
    """Real HQ photos from ../shared/data when present, else smooth synthetic images."""
    if SHARED_HR.is_dir():
        return SHARED_HR
    folder = tmp_path_factory.mktemp("hq")
    ramp = np.linspace(0, 255, 96)
    for i in range(6):
        rgb = np.stack(
            [
                np.add.outer(ramp, ramp * (i + 1) / 6) / 2,
                np.add.outer(ramp * i / 6, ramp) / 2,
                np.full((96, 96), 40 * i),
            ],
            -1,
        )
        Image.fromarray(rgb.clip(0, 255).astype(np.uint8)).save(folder / f"{i}.png")
    return folder


def _cfg(base: Path, out: Path, hq: Path, *overrides: str) -> TrainConfig:
    fast = [f"output_dir={out}", f"data.hq_folder={hq}", "data.size=32", "data.max_images=4", "log.every=1"]
    return load_config(TrainConfig, base, fast + list(overrides))


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def _log(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]


def test_shipped_training_configs_load():
    files = sorted((ROOT / "configs").glob("train_*.yaml"))
    assert {f.name for f in files} >= {
        "train_tiny_lora.yaml",
        "train_tiny_full.yaml",
        "train_lora_x4.yaml",
        "train_full_x4.yaml",
    }
    for file in files:
        cfg = load_config(TrainConfig, file)
        assert cfg.method in ("lora", "full"), file
    released = load_config(TrainConfig, ROOT / "configs" / "train_full_x4.yaml")
    assert (
        released.method,
        released.optim.lr,
        released.optim.warmup_epochs,
        released.optim.weight_decay,
        released.optim.grad_clip,
        released.residual_dropout,
        released.max_seq_len,
        released.mixed_precision,
        list(released.optim.betas),
    ) == ("full", 4e-4, 0.5, 0.1, 4.0, 0.05, 11776, "bf16", [0.9, 0.95])
    for file in sorted((ROOT / "configs" / "accelerate").glob("*.yaml")):
        launch = yaml.safe_load(file.read_text())
        assert launch["distributed_type"] == "FSDP", file
        assert launch["fsdp_config"]["fsdp_transformer_layer_cls_to_wrap"] == "ChameleonDecoderLayer"


def test_collate_right_pads_and_truncates():
    batch = collate(
        [
            {"ids": torch.arange(1, 6), "labels": torch.tensor([-100, -100, 3, 4, 5])},
            {"ids": torch.arange(1, 3), "labels": torch.tensor([-100, 2])},
        ],
        max_len=4,
    )
    assert batch["ids"].tolist() == [[1, 2, 3, 4], [1, 2, 0, 0]]
    assert batch["labels"].tolist() == [[-100, -100, 3, 4], [-100, 2, IGNORE_INDEX, IGNORE_INDEX]]
    assert batch["tokens"].item() == 6


def test_learning_rate_warms_up_then_decays_to_min():
    cfg = OptimConfig(lr=1e-3, min_lr=1e-5)
    lrs = [learning_rate(step, 10, 2, cfg) for step in range(10)]
    assert lrs[:3] == pytest.approx([1e-3 / 3, 2e-3 / 3, 1e-3])
    assert all(a > b for a, b in zip(lrs[2:], lrs[3:], strict=False))
    assert learning_rate(10, 10, 2, cfg) == pytest.approx(1e-5)


def test_residual_dropout_acts_on_the_residual_branches():
    model = load_backbone(str(backbone_folder(BackboneConfig(source="tiny"))), dtype=torch.float32)
    ids = torch.randint(10000, 10200, (1, 12))
    with torch.no_grad():
        reference = model.model(input_ids=ids).last_hidden_state
        add_residual_dropout(model, 1.0)  # drops every attention and MLP output: each layer is the identity
        assert torch.equal(model.eval().model(input_ids=ids).last_hidden_state, reference)  # off in eval mode
        hidden = model.train().model(input_ids=ids).last_hidden_state
    torch.testing.assert_close(hidden, model.model.norm(model.model.embed_tokens(ids)))


@pytest.mark.slow
def test_lora_trains_only_adapters_and_image_rows(tmp_path, hq_folder):
    """Frozen base, fp32 adapters; after training, merged weights differ only where adapters act."""
    folder = backbone_folder(BackboneConfig(source="tiny"))
    peft_model = apply_lora(
        load_backbone(str(folder), dtype=torch.bfloat16),
        load_config(TrainConfig, TINY_LORA).lora,
        rows=[4, 5],
    )
    trainable = {n: p for n, p in peft_model.named_parameters() if p.requires_grad}
    assert trainable and all(
        ("lora_" in n or "trainable_tokens_delta" in n) and p.dtype == torch.float32
        for n, p in trainable.items()
    )
    assert {n.split(".")[-4] for n in trainable if "lora_" in n} == {
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    }

    last = train(_cfg(TINY_LORA, tmp_path / "run", hq_folder, "max_steps=2", "lora.token_rows=image"))
    assert [r["step"] for r in _log(tmp_path / "run")] == [1, 2]
    assert (tmp_path / "run" / "config.yaml").read_text().startswith(RUN_CONFIG_HEADER)
    assert (last / "config.yaml").is_file() and not (last / "model").exists()
    saved = load_file(str(last / "adapter" / "adapter_model.safetensors"))
    assert all("lora_" in k or "trainable_tokens_delta" in k for k in saved)

    assert merge_main([str(last), str(tmp_path / "merged"), "--dtype", "float32"]) == 0
    assert not (tmp_path / ".merged.partial").exists()  # written beside it, then renamed
    with pytest.MonkeyPatch.context() as patch:  # a full disk: one line, exit 1, nothing left
        patch.setattr("pure.checkpoint.save_model_folder", _no_space)
        assert merge_main([str(last), str(tmp_path / "merged2"), "--dtype", "float32"]) == 1
    assert not (tmp_path / "merged2").exists() and not (tmp_path / ".merged2.partial").exists()
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "merged").iterdir() if p.is_file()}
    assert set(modes.values()) == {plain_mode()}, modes  # the weights too (safetensors writes 0o600)
    base = load_backbone(str(folder), dtype=torch.float32).state_dict()
    merged = load_backbone(str(tmp_path / "merged"), dtype=torch.float32).state_dict()
    assert merged.keys() == base.keys()
    image_rows = torch.zeros(TINY_VOCAB_SIZE, dtype=torch.bool)
    image_rows[[i for n, i in synthetic_vocabulary().items() if n.startswith(IMAGE_PREFIX)]] = True
    for name, weight in base.items():
        changed = (merged[name] != weight).flatten(1).any(1) if weight.ndim > 1 else (merged[name] != weight)
        if name.endswith(("embed_tokens.weight", "lm_head.weight")):
            assert changed.any() and not changed[~image_rows].any(), name
        elif name.endswith("_proj.weight"):  # every attention and MLP projection has an adapter
            assert changed.any(), name
        else:
            assert not changed.any(), name  # norms


@pytest.mark.slow
def test_full_fine_tune_overfits_one_batch(tmp_path, hq_folder):
    cfg = _cfg(
        TINY_FULL,
        tmp_path / "run",
        hq_folder,
        "data.max_images=1",
        "batch_size=1",
        "max_steps=8",
        "optim.lr=5e-3",
        "optim.warmup_epochs=0",
        "residual_dropout=0",
        "save_every=100",
        "gradient_checkpointing=false",
    )
    last = train(cfg)
    losses = [r["loss"] for r in _log(tmp_path / "run")]
    assert len(losses) == 8 and losses[-1] < 0.6 * losses[0], losses
    model = load_backbone(str(last / "model"), dtype=torch.float32)  # a standalone folder, for --model
    assert model.get_input_embeddings().num_embeddings == TINY_VOCAB_SIZE


@pytest.mark.slow
def test_resume_matches_uninterrupted_run(tmp_path, hq_folder, capsys):
    """Interrupted after step 1 (mid-epoch: 2 of 4 micro-batches), then resume=latest; dropout on; one of
    the 5 examples held out, its loss logged every 2 steps."""
    run = [
        "data.max_images=5",
        "eval_examples=1",
        "eval_every=2",
        "batch_size=1",
        "grad_accum=2",
        "max_steps=4",
        "save_every=1",
        "keep_last=0",
        "residual_dropout=0.1",
        "lora.dropout=0.1",
    ]
    whole = tmp_path / "whole"
    train(_cfg(TINY_LORA, whole, hq_folder, *run))
    position = json.loads((whole / "checkpoints" / "step-000001" / "trainer.json").read_text())
    assert (position["epoch"], position["batches_in_epoch"]) == (0, 2)

    cut = tmp_path / "cut"
    shutil.copytree(whole, cut)
    for later in ("step-000002", "step-000003", "step-000004"):
        shutil.rmtree(cut / "checkpoints" / later)
    with pytest.raises(ConfigError, match="resume=latest"):
        train(_cfg(TINY_LORA, cut, hq_folder, *run))
    train(_cfg(TINY_LORA, cut, hq_folder, *run, "resume=latest"))

    records = [(r["step"], r.get("loss"), r.get("val_loss")) for r in _log(whole)]
    assert [(r["step"], r.get("loss"), r.get("val_loss")) for r in _log(cut)] == records
    assert [step for step, _, val in records if val is not None] == [2, 4]
    a = load_file(str(whole / "checkpoints" / "step-000004" / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(cut / "checkpoints" / "step-000004" / "adapter" / "adapter_model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)

    damaged = tmp_path / "damaged"  # a damaged checkpoint: the message names its own config.yaml
    shutil.copytree(cut, damaged)
    (damaged / "checkpoints" / "step-000004" / "trainer.json").write_text("{")
    last = damaged / "checkpoints" / "step-000004"
    with pytest.raises(
        CheckpointError, match=rf"cannot resume from {last} .*those of {last / 'config.yaml'}"
    ):
        train(_cfg(TINY_LORA, damaged, hq_folder, *run, "max_steps=5", "resume=latest"))

    for steps, said in (
        ("4", "already reached its last step (4)"),
        ("3", "at step 4, beyond this run's last"),
    ):
        train(_cfg(TINY_LORA, cut, hq_folder, *run, f"max_steps={steps}", "resume=latest"))
        assert said in capsys.readouterr().out
    assert [(r["step"], r.get("loss"), r.get("val_loss")) for r in _log(cut)] == records  # nothing trained


def test_no_progress_hides_the_training_bar(tmp_path, hq_folder, capsys):
    """infer.py, prepare_data.py, evaluate.py and benchmark.py take --no-progress; train.py had no way to
    hide its bar (a scheduler's log filled with carriage-return updates)."""
    args = [
        f"output_dir={tmp_path / 'run'}",
        f"data.hq_folder={hq_folder}",
        "data.size=32",
        "data.max_images=2",
        "max_steps=1",
        "gradient_checkpointing=false",
    ]
    assert train_main(["--config", str(TINY_LORA), "--no-progress", *args]) == 0
    captured = capsys.readouterr()
    assert "train:" not in captured.err and "last checkpoint:" in captured.out


@pytest.mark.slow
def test_train_script_then_infer_with_adapter(tmp_path, hq_folder):
    out = tmp_path / "run"
    assert (
        train_main(
            [
                "--config",
                str(TINY_LORA),
                f"output_dir={out}",
                f"data.hq_folder={hq_folder}",
                "data.size=32",
                "data.max_images=2",
                "max_steps=2",
                "save_every=1",
                "keep_last=1",
                "gradient_checkpointing=false",
            ]
        )
        == 0
    )
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-000002"]  # pruned, no partial left
    image = tmp_path / "lq.png"
    Image.open(sorted(hq_folder.iterdir())[0]).convert("RGB").resize((32, 32)).save(image)
    adapter = out / "checkpoints" / "step-000002" / "adapter"
    code = infer_main(
        [
            "-i",
            str(image),
            "-o",
            str(tmp_path / "sr"),
            "--config",
            str(ROOT / "configs" / "tiny.yaml"),
            "--adapter",
            str(adapter),
            "--outscale",
            "2",
            "--no-progress",
            "restore.tile=64",
            "restore.tile_overlap=16",
            "restore.max_text_tokens=4",
        ]
    )
    assert code == 0
    sidecar = json.loads((tmp_path / "sr" / "lq.json").read_text())
    assert sidecar["adapter"] == str(adapter) and sidecar["output_size"] == [64, 64]


def test_merge_names_a_folder_that_is_no_checkpoint(tmp_path, capsys):
    assert merge_main([str(tmp_path), str(tmp_path / "merged")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {tmp_path} is not a training checkpoint") and "adapter/" in err
    assert len(err.splitlines()) == 1
    (tmp_path / "config.yaml").write_text("method: lora\n")  # a run's own folder: it names a checkpoint
    (tmp_path / "checkpoints" / "step-000008").mkdir(parents=True)
    assert merge_main([str(tmp_path), str(tmp_path / "merged")]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err
        == f"error: {tmp_path} is a training run; pass one of its checkpoints, e.g. "
        + str(tmp_path / "checkpoints" / "step-000008")
        + " (the last)"
    )
    gone = tmp_path / "checkpoints" / "step-000004"  # pruned by keep_last: the run's checkpoints are listed
    assert merge_main([str(gone), str(tmp_path / "merged")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {gone} does not exist (pruned by keep_last, or a typo); that run's are step-000008"


def test_a_resume_checkpoint_that_is_gone_lists_those_there(tmp_path):
    (tmp_path / "checkpoints" / "step-000008").mkdir(parents=True)
    with pytest.raises(
        ConfigError, match=r"resume='.*step-000004' does not exist \(pruned by keep_last.*step-000008"
    ):
        find_resume(tmp_path, str(tmp_path / "checkpoints" / "step-000004"))


def test_shards_named_by_their_subfolder_point_to_the_prepared_folder(tmp_path):
    (tmp_path / "shards").mkdir()
    (tmp_path / "index.jsonl").write_text("")
    with pytest.raises(
        DataError, match=rf"data.shards names the prepared folder itself, data.shards={tmp_path}$"
    ):
        ShardDataset(tmp_path / "shards")
    photo = tmp_path / "album" / "photo.png"  # not a folder to prepare into, as the message said
    photo.parent.mkdir()
    photo.write_bytes(b"")
    with pytest.raises(DataError, match=rf"^data.shards={photo} is a file; set it to the folder"):
        ShardDataset(photo)


def test_merge_never_overwrites(tmp_path, capsys):
    """An existing file, a non-empty folder (the base model's, or the checkpoint itself) is refused before
    anything loads; nothing in it changes."""
    checkpoint = tmp_path / "step-000002"
    (checkpoint / "adapter").mkdir(parents=True)
    (checkpoint / "config.yaml").write_text("method: lora\n")
    (checkpoint / "trainer.json").write_text("{}")
    (tmp_path / "file.png").write_bytes(b"x")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "config.json").write_text("{}")
    for output, message in [
        (tmp_path / "file.png", "is a file; pass a new folder for the merged model"),
        (tmp_path / "models", "already exists and is not empty; pass a new folder for the merged model"),
        (checkpoint, f"is inside {checkpoint.resolve()}, which training prunes and resumes write into"),
    ]:
        before = sorted(p.name for p in tmp_path.rglob("*"))
        assert merge_main([str(checkpoint), str(output)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"error: output {output} {message}"), err
        assert sorted(p.name for p in tmp_path.rglob("*")) == before
    assert merge_main([str(checkpoint), "/proc/pure-merged/model"]) == 2  # before anything loads
    assert capsys.readouterr().err.startswith("error: output /proc/pure-merged/model cannot be written (")


@pytest.mark.slow
def test_extended_vocabulary_trains_the_new_rows(tmp_path, hq_folder):
    """A base with 65,536 rows and PURE's 73,728-entry tokenizer: rows 65536.. are added and trained."""
    config = tiny_backbone_config()
    config["vocab_size"] = SECOND_IMAGE_ID  # Chameleon's vocabulary, before PURE appended 8,192 codes
    small = write_backbone_checkpoint(
        tmp_path / "base", config, det_state_dict(reference_backbone_shapes(config), 0)
    )
    tokenizer = str(backbone_folder(BackboneConfig(source="tiny")))
    common = [f"backbone.source={small}", f"tokenizer={tokenizer}", "max_steps=1"]
    with pytest.raises(ConfigError, match="token_rows=none"):
        train(_cfg(TINY_LORA, tmp_path / "none", hq_folder, *common, "lora.token_rows=none"))
    last = train(_cfg(TINY_LORA, tmp_path / "run", hq_folder, *common, "lora.token_rows=auto"))
    saved = load_file(str(last / "adapter" / "adapter_model.safetensors"))
    rows = saved["base_model.model.model.embed_tokens.token_adapter.trainable_tokens_delta"]
    assert rows.shape == (8192, 64)
    # the adapter/ folder (what infer.py --adapter takes) is accepted as well as the checkpoint
    assert merge_main([str(last / "adapter"), str(tmp_path / "merged"), "--dtype", "float32"]) == 0
    merged = load_backbone(str(tmp_path / "merged"), dtype=torch.float32)
    assert merged.get_input_embeddings().num_embeddings == TINY_VOCAB_SIZE
    torch.testing.assert_close(merged.get_input_embeddings().weight[SECOND_IMAGE_ID:], rows)


@pytest.mark.slow
def test_trains_from_prepared_shards(tmp_path, hq_folder):
    """scripts/prepare_data.py's shards feed the trainer directly (data.shards)."""
    hq = tmp_path / "hq"
    hq.mkdir()
    for source in sorted(hq_folder.glob("*.png"))[:2]:
        shutil.copy(source, hq / source.name)
    code = prepare_main(
        [
            "--config",
            str(ROOT / "configs" / "prepare_tiny.yaml"),
            "--hq-dir",
            str(hq),
            "--out",
            str(tmp_path / "shards"),
            "--no-progress",
            "hq_size=64",
            "caption.allow_missing=true",
        ]
    )
    assert code == 0
    out = tmp_path / "run"
    cfg = _cfg(TINY_LORA, out, hq, f"data.shards={tmp_path / 'shards'}", "batch_size=1", "epochs=1")
    train(cfg)
    log = _log(out)
    assert len(log) == 2 and all(np.isfinite(row["loss"]) for row in log)


def test_training_refuses_a_quantized_backbone(tmp_path):
    cfg = load_config(TrainConfig, TINY_LORA, [f"output_dir={tmp_path}", "backbone.quantize=int8"])
    with pytest.raises(ConfigError, match="backbone.quantize=int8: training needs the full-precision"):
        train(cfg)


def test_a_relative_hq_folder_says_where_it_was_looked_for(tmp_path, monkeypatch):
    """Config paths are read from the current folder, not the config file's: the message says which."""
    from pure.data.image_folder import ImageFolderExamples

    monkeypatch.chdir(tmp_path)
    cfg = load_config(TrainConfig, TINY_LORA, ["data.hq_folder=../shared/data/hr"]).data
    with pytest.raises(
        DataError,
        match=rf"data.hq_folder=../shared/data/hr \(relative to the current folder "
        rf"{tmp_path}\) is not a folder of HQ images: set data.hq_folder=DIR",
    ):
        ImageFolderExamples(cfg, None, None, None)
    (tmp_path / "photo.png").write_bytes(b"")  # a file, and an absolute path: no "run from" hint
    for given, said in (
        (tmp_path / "photo.png", "is a file; set data.hq_folder to the folder that holds"),
        (tmp_path / "nowhere", "is not a folder of HQ images: set data.hq_folder=DIR"),
    ):
        cfg = load_config(TrainConfig, TINY_LORA, [f"data.hq_folder={given}"]).data
        with pytest.raises(DataError, match=rf"^data.hq_folder={given} {said}[^,]*$"):
            ImageFolderExamples(cfg, None, None, None)


def test_training_refuses_what_would_fail_late_or_do_nothing(tmp_path, monkeypatch):
    """Before anything loads: no steps at all, an output_dir that cannot be made (nothing left behind),
    and a data.captions file that does not exist (its descriptions would silently be the placeholder)."""
    with pytest.raises(ConfigError, match="epochs=0 with max_steps=0 trains nothing"):
        train(load_config(TrainConfig, TINY_LORA, [f"output_dir={tmp_path / 'a'}", "epochs=0"]))
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match=r"output_dir=.*file/run cannot be written \(.*\); choose another"):
        train(load_config(TrainConfig, TINY_LORA, [f"output_dir={tmp_path / 'file' / 'run'}"]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
    monkeypatch.chdir(tmp_path)
    cfg = load_config(TrainConfig, TINY_LORA, [f"output_dir={tmp_path / 'b'}", "data.captions=typo.jsonl"])
    with pytest.raises(DataError, match=r"data.captions=typo.jsonl \(relative to .*\) does not exist"):
        train(cfg)
    cfg = load_config(TrainConfig, TINY_LORA, [f"output_dir={tmp_path / 'c'}", f"data.captions={tmp_path}"])
    with pytest.raises(DataError, match=rf"data.captions={tmp_path} is a folder; pass the descriptions file"):
        train(cfg)


def test_wandb_that_does_not_import_is_refused_before_anything_loads(tmp_path, broken_package):
    """accelerate drops a tracker it cannot import with a warning: the run trained without wandb."""
    broken_package("wandb")
    cfg = load_config(TrainConfig, TINY_LORA, [f"output_dir={tmp_path / 'run'}", "log.wandb=true"])
    with pytest.raises(PureError, match=r'^log.wandb=true needs wandb: pip install -e "\.\[wandb\]" \(or'):
        train(cfg)
    assert not (tmp_path / "run").exists()


def test_a_fresh_run_never_overwrites_a_config_it_did_not_write(tmp_path):
    """output_dir/config.yaml of the user's own is refused (one line, the file untouched); one a run
    wrote (its first line says so) is replaced by a new run's settings."""
    from pure.train import check_run_config

    (tmp_path / "config.yaml").write_text("method: lora\n")
    cfg = load_config(TrainConfig, TINY_LORA, [f"output_dir={tmp_path}"])
    with pytest.raises(
        ConfigError, match=r"config.yaml is not a config a training run wrote.*move that file"
    ):
        train(cfg)
    assert (tmp_path / "config.yaml").read_text() == "method: lora\n"
    (tmp_path / "config.yaml").write_text(RUN_CONFIG_HEADER + "method: lora\n")
    check_run_config(tmp_path)


def test_an_hq_folder_skips_unreadable_and_small_images(tmp_path, hq_folder):
    """As prepare_data.py does: a broken file and an image below data.size are said and left out (never
    upscaled into a target), max_images counts usable images, and nothing usable is one line."""
    from pure.data.image_folder import ImageFolderExamples
    from pure.model import load_text_side
    from pure.vq import load_vq

    folder = tmp_path / "hq"
    folder.mkdir()
    (folder / "0-broken.png").write_bytes(b"not a png")
    Image.new("RGB", (40, 24), "gray").save(folder / "1-small.png")
    for good in sorted(hq_folder.glob("*.png"))[:2]:
        shutil.copy(good, folder / f"2-{good.name}")
    cfg = load_config(
        TrainConfig, TINY_LORA, [f"data.hq_folder={folder}", "data.size=32", "data.max_images=1"]
    )
    tokenizer, vocab = load_text_side(backbone_folder(BackboneConfig(source="tiny")))
    vq = load_vq("tiny")
    notes: list[str] = []
    dataset = ImageFolderExamples(cfg.data, tokenizer, vocab, vq, notes.append)
    assert len(dataset) == 1 and len(dataset.skipped) == 2 and len(notes) == 2
    assert "0-broken.png" in notes[0] and notes[0].startswith("warning: skipped ")
    assert "1-small.png: 40x24 is smaller than data.size=32" in notes[1]
    (folder / "2-keep").mkdir()
    for good in folder.glob("2-*.png"):
        good.rename(folder / "2-keep" / good.name)
    notes.clear()
    with pytest.raises(DataError, match=r"no usable image in data.hq_folder=.*all 2 were skipped"):
        ImageFolderExamples(cfg.data, tokenizer, vocab, vq, notes.append)
    # the images moved into a subfolder are not searched (prepare_data.py would): said, not silently left out
    assert notes[0] == (
        f"note: data.hq_folder={folder}: 1 subfolder(s) of it (2-keep) hold images, which data.hq_folder "
        "does not search (prepare_data.py does: train on its data.shards)"
    )
    for other in folder.glob("*.png"):
        other.unlink()
    with pytest.raises(
        DataError, match=r"no images .*; 1 subfolder\(s\) of it \(2-keep\) hold images.*one of them$"
    ):
        ImageFolderExamples(cfg.data, tokenizer, vocab, vq, notes.append)


def test_a_full_disk_while_saving_is_one_line_and_leaves_no_partial_checkpoint(
    tmp_path, hq_folder, monkeypatch, capsys
):
    import pure.train

    def full(*args):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 12740672 vs 12740560")

    monkeypatch.setattr(pure.train, "export_weights", full)
    monkeypatch.setattr("pure.checkpoint.out_of_space", lambda err, path: "unexpected pos" in str(err))
    out = tmp_path / "run"
    args = [
        f"output_dir={out}",
        f"data.hq_folder={hq_folder}",
        "data.size=32",
        "data.max_images=2",
        "max_steps=1",
    ]
    assert train_main(["--config", str(TINY_LORA), *args]) == 1
    (err,) = [
        line[line.index("error: ") :] for line in capsys.readouterr().err.splitlines() if "error: " in line
    ]
    assert err.startswith(
        f"error: no space left on the device of {out / 'checkpoints'} while writing step-000001"
    )
    assert err.endswith("rerun the same command with resume=latest")
    assert list((out / "checkpoints").iterdir()) == []

    def interrupted(*args):  # Ctrl-C while the weights are written
        raise KeyboardInterrupt

    monkeypatch.setattr(pure.train, "export_weights", interrupted)
    shutil.rmtree(out)
    assert train_main(["--config", str(TINY_LORA), *args]) == 130
    assert list((out / "checkpoints").iterdir()) == []  # no hidden .step-000001.partial left


def test_a_full_disk_while_the_settings_or_the_log_are_written_is_one_line(
    tmp_path, hq_folder, monkeypatch, capsys
):
    """Only a checkpoint's save said 'no space left': config.yaml (written as a run starts) and log.jsonl
    (appended every log.every steps) ended the run with an OSError traceback."""
    out = tmp_path / "run"
    args = ["--config", str(TINY_LORA), f"output_dir={out}", f"data.hq_folder={hq_folder}"]
    args += ["data.size=32", "data.max_images=2", "max_steps=1", "--no-progress"]
    write_text, append = Path.write_text, Path.open

    def full_settings(self, *args, **kwargs):
        if self.name.startswith(".config.yaml"):  # the temporary file of the atomic write
            raise OSError(errno.ENOSPC, "No space left on device")
        return write_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full_settings)
    assert train_main(args) == 1
    err = capsys.readouterr().err.strip()
    assert err == (
        f"error: no space left on the device of output_dir={out} (OSError: [Errno 28] cannot write "
        f"{out / 'config.yaml'}: No space left on device); free space, then run it again"
    )
    assert not out.exists()  # the folder it made, empty, is removed
    monkeypatch.setattr(Path, "write_text", write_text)

    def full_log(self, mode="r", *args, **kwargs):
        if self.name == "log.jsonl" and mode == "a":
            raise OSError(errno.ENOSPC, "No space left on device")
        return append(self, mode, *args, **kwargs)

    monkeypatch.setattr(Path, "open", full_log)
    assert train_main(args) == 1
    (err,) = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert err == (
        f"error: no space left on the device of output_dir={out} (OSError: [Errno 28] cannot write "
        f"{out / 'log.jsonl'}: No space left on device); free space, then run it again"
    )
    assert not (out / "checkpoints").exists()


class _OneProcess:
    """The part of accelerate's Accelerator that save_checkpoint uses, for one process."""

    is_main_process = True

    def wait_for_everyone(self):
        pass

    def save_state(self, folder):
        Path(folder).mkdir()
        (Path(folder) / "rng.pkl").write_text("new")


def test_ctrl_c_while_a_checkpoint_replaces_its_earlier_copy_keeps_the_earlier_one(tmp_path, monkeypatch):
    """Saving a step that already has a checkpoint moves the earlier copy aside, renames the new one in and
    only then deletes the earlier one: stopped between the two renames, the earlier copy is put back."""
    cfg = load_config(TrainConfig, TINY_LORA, [f"output_dir={tmp_path}"])
    earlier = tmp_path / "checkpoints" / "step-000003"
    earlier.mkdir(parents=True)
    (earlier / "trainer.json").write_text("earlier")
    rename = Path.rename

    def interrupted(self, target):
        if self.name.endswith(".partial"):  # the first rename (the earlier copy aside) has happened
            raise KeyboardInterrupt
        return rename(self, target)

    monkeypatch.setattr(Path, "rename", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(_OneProcess(), tmp_path, {"step": 3}, cfg, lambda folder: None)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-000003"]
    assert (earlier / "trainer.json").read_text() == "earlier"
    monkeypatch.setattr(Path, "rename", rename)
    save_checkpoint(_OneProcess(), tmp_path, {"step": 3}, cfg, lambda folder: None)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-000003"]
    assert json.loads((earlier / "trainer.json").read_text()) == {"step": 3}  # replaced once whole


def test_a_save_makes_room_first_so_a_lower_keep_last_helps_a_full_disk(tmp_path):
    """Old checkpoints were pruned only after the new one was whole: a disk with room for keep_last of them
    filled up on every save, and the message's 'set keep_last lower' failed the same way on the rerun."""
    root = tmp_path / "checkpoints"
    during = []

    def full(folder):
        during.append(sorted(p.name for p in root.iterdir()))
        _no_space()

    for keep, left, room in (
        (3, ["step-000002", "step-000003"], "free space (or set keep_last lower than 3), then"),
        (2, ["step-000003"], "free space, then"),  # as 1: lower would keep as many while it saves
        (1, ["step-000003"], "free space, then"),  # never the newest: the save may fail
        (0, ["step-000001", "step-000002", "step-000003"], "free space (or set keep_last: 0 keeps every"),
    ):
        for step in (1, 2, 3):
            (root / f"step-00000{step}").mkdir(parents=True, exist_ok=True)
        cfg = load_config(TrainConfig, TINY_LORA, [f"output_dir={tmp_path}", f"keep_last={keep}"])
        with pytest.raises(DiskFullError, match=re.escape(room)):
            save_checkpoint(_OneProcess(), tmp_path, {"step": 4}, cfg, full)
        assert during.pop() == [".step-000004.partial", *left]
        assert sorted(p.name for p in root.iterdir()) == left


def test_copies_beside_the_checkpoints_are_neither_resumed_nor_pruned(tmp_path):
    """A researcher's copy inside checkpoints/ (step-000002-best, Finder's 'step-000001 copy') was taken for
    the latest checkpoint, and keep_last deleted it with the real ones."""
    cfg = load_config(TrainConfig, TINY_LORA, [f"output_dir={tmp_path}", "keep_last=1"])
    root = tmp_path / "checkpoints"
    for name in ("step-000001", "step-000001 copy", "step-000002", "step-000002-best"):
        (root / name).mkdir(parents=True)
        (root / name / "trainer.json").write_text("{}")
    assert find_resume(tmp_path, "latest") == root / "step-000002"
    save_checkpoint(_OneProcess(), tmp_path, {"step": 3}, cfg, lambda folder: None)
    assert sorted(p.name for p in root.iterdir()) == ["step-000001 copy", "step-000002-best", "step-000003"]
    assert find_resume(tmp_path, "latest") == root / "step-000003"


def test_what_a_killed_save_left_is_cleared_before_a_resume(tmp_path):
    """SIGKILL (a cluster's time limit) during a save leaves .step-N.partial, half written and hidden, until
    that step is saved again; killed between the two renames of a replacing save, the step's checkpoint was
    only under .step-N.replaced, and resume=latest did not see it."""
    from pure.checkpoint import tidy_interrupted

    root = tmp_path / "checkpoints"
    for name in (".step-000003.partial", ".step-000002.replaced", "step-000001", ".step-000001.replaced"):
        (root / name / "state").mkdir(parents=True)
        (root / name / "trainer.json").write_text(name)
    said = tidy_interrupted(tmp_path)
    assert sorted(p.name for p in root.iterdir()) == ["step-000001", "step-000002"]
    assert (root / "step-000001" / "trainer.json").read_text() == "step-000001"  # the newer copy stays
    assert (root / "step-000002" / "trainer.json").read_text() == ".step-000002.replaced"
    assert find_resume(tmp_path, "latest") == root / "step-000002"
    assert said == [
        f"note: deleted {root / '.step-000003.partial'}, a checkpoint whose save was interrupted",
        f"note: put back {root / 'step-000002'}, moved aside by a save that was interrupted",
    ]
    assert tidy_interrupted(tmp_path / "new") == []


def test_a_run_refused_after_making_its_output_dir_leaves_no_folder(tmp_path, hq_folder):
    """Checks that need the data (here max_seq_len) come after output_dir is made: it is removed again,
    with the parents the run made; a folder that held something before is kept."""
    cfg = _cfg(TINY_LORA, tmp_path / "a" / "run", hq_folder, "max_seq_len=100")
    with pytest.raises(ConfigError, match="max_seq_len=100 ends inside the prompt"):
        train(cfg)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "kept").mkdir()
    with pytest.raises(ConfigError, match="max_seq_len=100 ends inside the prompt"):
        train(_cfg(TINY_LORA, tmp_path / "kept", hq_folder, "max_seq_len=100"))
    assert (tmp_path / "kept").is_dir()


def test_a_second_run_in_the_same_output_dir_is_refused_while_the_first_runs(tmp_path, hq_folder, capsys):
    """Two runs started into one output_dir both trained, doubled every log.jsonl line and wrote each other's
    checkpoints; the second's start deleted the first's save in progress as an interrupted one."""
    out = tmp_path / "run"
    saving = out / "checkpoints" / ".step-000004.partial"  # the first run's save in progress
    saving.mkdir(parents=True)
    first = lock_folder(out)
    args = ["--config", str(TINY_LORA), f"output_dir={out}", f"data.hq_folder={hq_folder}", "resume=latest"]
    assert train_main(args) == 2
    (err,) = capsys.readouterr().err.strip().splitlines()
    assert err == (
        f"error: output_dir={out} is in use by another training run (started twice?): wait for it to end "
        "(then resume=latest continues from its last checkpoint), or choose another output_dir"
    )
    assert saving.is_dir()
    first()  # the first run ended: the next one goes on (here to a refusal that needs the data)
    with pytest.raises(ConfigError, match="max_seq_len=100 ends inside the prompt"):
        train(_cfg(TINY_LORA, out, hq_folder, "max_seq_len=100", "resume=latest"))
    assert not saving.exists()  # cleared as interrupted once no run held the folder
    again = lock_folder(out)
    assert again is not None  # and released again by the refused run
    again()


def test_training_refuses_an_adapter_it_would_not_use(tmp_path):
    cfg = load_config(TrainConfig, TINY_LORA, [f"output_dir={tmp_path}", "backbone.adapter=/nonexistent"])
    with pytest.raises(ConfigError, match=r"backbone.adapter=/nonexistent: .*resume=CHECKPOINT.*merge_lora"):
        train(cfg)


class _Spans(list):
    """A stand-in dataset that only knows its examples' (tokens, prompt tokens)."""

    @property
    def spans(self):
        return list(self)


def test_max_seq_len_inside_a_prompt_is_refused():
    """Cutting inside the prompt masks every label: the loss is NaN and nothing is learnt."""
    with pytest.raises(
        ConfigError, match=r"max_seq_len=1024 ends inside the prompt of 2 of 2.*max_seq_len=8600"
    ):
        check_lengths(_Spans([(8600, 4264), (8500, 4200)]), 1024)
    notes: list[str] = []
    check_lengths(_Spans([(8600, 4264), (4000, 3000)]), 5000, notes.append)  # cut inside one answer: said
    assert notes == ["note: max_seq_len=5000 cuts the answer's end of 1 example(s) (longest 8600 tokens)"]


def test_damaged_shards_are_one_line(tmp_path, hq_folder):
    """A bad index line, a truncated shard file, a missing folder: DataError (one line), not a traceback."""
    hq = tmp_path / "hq"
    hq.mkdir()
    shutil.copy(sorted(hq_folder.glob("*.png"))[0], hq)
    args = ["--config", str(ROOT / "configs" / "prepare_tiny.yaml"), "--hq-dir", str(hq), "--no-progress"]
    assert (
        prepare_main([*args, "--out", str(tmp_path / "shards"), "hq_size=64", "caption.allow_missing=true"])
        == 0
    )
    assert len(ShardDataset(tmp_path / "shards").spans) == 1
    shard = next((tmp_path / "shards" / "shards").iterdir())
    assert stat.S_IMODE(shard.stat().st_mode) == plain_mode()  # not safetensors' 0o600
    shard.write_bytes(shard.read_bytes()[:100])
    with pytest.raises(DataError, match="is damaged"):
        ShardDataset(tmp_path / "shards")
    index = tmp_path / "shards" / "index.jsonl"
    index.write_text(index.read_text() + "{not json\n")
    with pytest.raises(DataError, match="line 2: not JSON"):
        ShardDataset(tmp_path / "shards")
    with pytest.raises(DataError, match="not found"):
        ShardDataset(tmp_path / "missing")


def test_a_lora_target_that_matches_nothing_names_the_layers():
    lora = load_config(TrainConfig, TINY_LORA, ["lora.target_modules=[q_prj]"]).lora
    model = load_backbone(str(backbone_folder(BackboneConfig(source="tiny"))), dtype=torch.float32)
    with pytest.raises(ConfigError, match=r"lora.target_modules=\['q_prj'\].*q_proj"):
        apply_lora(model, lora, rows=[])
    # one misspelt name among right ones: peft trained the others without a word
    lora = load_config(TrainConfig, TINY_LORA, ["lora.target_modules=[q_proj,v_prj]"]).lora
    with pytest.raises(ConfigError, match=r"'v_prj' matches no layer of the model; .*v_proj"):
        apply_lora(model, lora, rows=[])
    lora = load_config(TrainConfig, TINY_LORA, ["lora.target_modules=[input_layernorm]"]).lora
    with pytest.raises(ConfigError, match=r"input_layernorm.*not supported.*linear layers are"):
        apply_lora(model, lora, rows=[])  # a layer LoRA cannot wrap: still peft's reason


def test_resuming_with_another_batch_size_is_refused(tmp_path):
    """The saved data position counts batches: another batch_size would skip or repeat examples."""
    checkpoint = tmp_path / "checkpoints" / "step-000010"
    checkpoint.mkdir(parents=True)
    cfg = load_config(TrainConfig, TINY_LORA, [f"output_dir={tmp_path}"])
    (checkpoint / "config.yaml").write_text(to_yaml(cfg))
    assert check_resumable(checkpoint, cfg) == ""  # the same settings: fine, nothing to say
    lr = load_config(TrainConfig, TINY_LORA, [f"output_dir={tmp_path}", "optim.lr=0.01", "z_loss_weight=0.5"])
    assert check_resumable(checkpoint, lr) == (  # may change, but not silently
        f"note: resuming step-000010 with other settings than it was saved with: optim.lr={cfg.optim.lr} -> "
        "0.01, z_loss_weight=0.0 -> 0.5"
    )
    other = load_config(
        TrainConfig, TINY_LORA, [f"output_dir={tmp_path}", f"batch_size={cfg.batch_size + 1}"]
    )
    with pytest.raises(
        ConfigError, match=rf"saved with batch_size={cfg.batch_size} \(now {cfg.batch_size + 1}\)"
    ):
        check_resumable(checkpoint, other)
    precision = "bf16" if cfg.mixed_precision != "bf16" else "no"
    other = load_config(TrainConfig, TINY_LORA, [f"output_dir={tmp_path}", f"mixed_precision={precision}"])
    assert check_resumable(checkpoint, other).endswith(
        f"mixed_precision={cfg.mixed_precision} -> {precision}"
    )
    other = load_config(TrainConfig, TINY_LORA, [f"output_dir={tmp_path}", "lora.dropout=0.3"])
    assert check_resumable(checkpoint, other).endswith(
        f"lora.dropout={cfg.lora.dropout} -> 0.3"
    )  # was silent
    for changed in ("data.max_images=3", "data.size=32", "eval_examples=2"):  # another set of examples
        other = load_config(TrainConfig, TINY_LORA, [f"output_dir={tmp_path}", changed])
        with pytest.raises(ConfigError, match=rf"saved with {changed.partition('=')[0]}=.*\(now "):
            check_resumable(checkpoint, other)
    for damaged in ("batch_size: [", "- a list"):  # unreadable: refused, never resumed unchecked
        (checkpoint / "config.yaml").write_text(damaged)
        with pytest.raises(CheckpointError, match=r"cannot read .*config.yaml"):
            check_resumable(checkpoint, cfg)


def test_a_resumed_log_drops_a_half_written_line(tmp_path):
    """A run killed while writing log.jsonl leaves a cut last line: resuming drops it (and any record past
    the checkpoint's step) instead of failing on it."""
    from types import SimpleNamespace

    from pure.train import RunLog

    log = tmp_path / "log.jsonl"
    log.write_text(
        '{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n{"step": 3, "loss": 1.2}\n{"step": 4, "lo'
    )
    RunLog(SimpleNamespace(is_main_process=True), log, resumed_step=2)
    assert log.read_text() == '{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n'


def test_resume_refuses_other_data_and_says_when_the_schedule_is_replanned(tmp_path, capsys):
    """Images replaced or added after a checkpoint would move its saved data position onto other examples;
    another max_steps re-plans the cosine learning rate, which the resume says."""
    hq = tmp_path / "hq"
    hq.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(hq / f"{i}.png")
    run = ["max_steps=2", "save_every=1", "keep_last=0", "data.max_images=0"]
    out = tmp_path / "run"
    last = train(_cfg(TINY_LORA, out, hq, *run))
    saved = json.loads((last / "trainer.json").read_text())
    assert saved["examples"] == 3 and len(saved["data_fingerprint"]) == 16

    original = (hq / "1.png").read_bytes()
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(hq / "1.png")  # replaced
    with pytest.raises(ConfigError, match=rf"{last} was saved with other training data .*hq_folder={hq}"):
        train(_cfg(TINY_LORA, out, hq, *run, "resume=latest"))
    (hq / "1.png").write_bytes(original)
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(hq / "3.png")  # added
    with pytest.raises(ConfigError, match=r"held 3 examples, now 4: data.hq_folder="):
        train(_cfg(TINY_LORA, out, hq, *run, "resume=latest"))

    (hq / "3.png").unlink()  # the data as it was: the resume goes on
    train(_cfg(TINY_LORA, out, hq, *run[1:], "max_steps=4", "resume=latest"))
    said = capsys.readouterr().out
    assert "planned 2 steps and this one 4: the cosine learning-rate schedule is re-planned" in said

    state = out / "checkpoints" / "step-000004" / "state"  # accelerate would only log a missing RNG state
    for damage in ("truncate", "delete"):
        if damage == "truncate":
            (state / "random_states_0.pkl").write_bytes((state / "random_states_0.pkl").read_bytes()[:20])
        else:
            (state / "random_states_0.pkl").unlink()
        with pytest.raises(CheckpointError, match=r"cannot resume from .*step-000004"):
            train(_cfg(TINY_LORA, out, hq, *run[1:], "max_steps=5", "resume=latest"))


def test_a_warmup_as_long_as_the_run_is_noted():
    optim = OptimConfig(lr=2e-3, warmup_epochs=100)
    assert warmup_notice(3, 800, optim) == (
        "note: optim.warmup_epochs=100 is 800 steps, not fewer than this run's 3: the learning rate never "
        "reaches optim.lr=0.002 (it peaks at 7.49e-06); lower optim.warmup_epochs or train longer"
    )
    assert warmup_notice(3, 2, optim) == "" and warmup_notice(0, 0, optim) == ""


def test_an_accumulation_longer_than_an_epoch_is_noted():
    """grad_accum=16 on 4 batches an epoch: accelerate steps at the epoch's end, every 4 micro-batches, so
    the announced sequences per step were four times what each step had."""
    from pure.train import accumulation_notice

    assert accumulation_notice(4, 16, 1, 2) == (
        "note: grad_accum=16 is more than the 4 batch(es) of an epoch on each process, so each optimizer "
        "step accumulates 4: 8 sequences a step, not 32 sequences; lower grad_accum (or batch_size) or add "
        "data"
    )
    assert accumulation_notice(4, 4, 1, 2) == "" and accumulation_notice(5, 3, 2, 1) == ""


def test_the_start_line_says_when_the_data_set_caps_a_step():
    """batch_size=16 on 5 examples: the start line said '16 x 1 x 1 sequences' a step, where each step held
    the 5 examples (a step never spans two epochs)."""
    from pure.train import accumulation_notice, start_line

    assert start_line("lora", 1234, 5, 3, 16, 1, 1) == (
        "lora: 1,234 trainable parameters; 5 examples, 3 steps of all 5 examples each (the data set's size "
        "caps 16 x 1 x 1 sequences)"
    )
    assert start_line("full", 10, 64, 4, 2, 4, 2).endswith("64 examples, 4 steps of 2 x 4 x 2 sequences")
    assert accumulation_notice(1, 4, 16, 1, 5) == (
        "note: grad_accum=4 is more than the 1 batch(es) of an epoch on each process, so each optimizer "
        "step accumulates 1: all 5 examples a step, not 64 sequences; lower grad_accum (or batch_size) or "
        "add data"
    )


def test_schedule_change_names_both_rates():
    optim = OptimConfig(lr=1e-3, min_lr=0.0)
    assert schedule_change({"step": 5, "total_steps": 10}, 10, 0, optim) == ""
    assert schedule_change({"step": 5}, 20, 0, optim) == ""  # a checkpoint that did not save its plan
    note = schedule_change({"step": 5, "total_steps": 10}, 20, 0, optim)
    assert "at step 5 the rate is 0.000854 (it was 0.0005)" in note, note


def test_resume_names_and_branches(tmp_path):
    """resume= takes a checkpoint's bare name; a misspelt latest says so; an older checkpoint while later
    ones exist is refused (keep_last would prune the new branch, and latest would pick the old one)."""
    for step in ("step-000001", "step-000002"):
        (tmp_path / "checkpoints" / step).mkdir(parents=True)
        (tmp_path / "checkpoints" / step / "trainer.json").write_text("{}")
    assert find_resume(tmp_path, "step-000002") == tmp_path / "checkpoints" / "step-000002"
    with pytest.raises(ConfigError, match=r"resume='lastest' does not exist .*did you mean resume=latest\?"):
        find_resume(tmp_path, "lastest")
    with pytest.raises(
        ConfigError, match=r"resume='step-000001' is older than this run's step-000002: to branch"
    ):
        find_resume(tmp_path, "step-000001")


def test_a_resume_with_other_optimizer_settings_trains_with_them(tmp_path, hq_folder, monkeypatch, capsys):
    """Resuming with another optim.weight_decay, betas or eps was named as a change, but torch's optimizer
    state brought the checkpoint's values back with the moments: the run went on with the old ones."""
    import pure.train
    from pure.train import make_optimizer

    made = []
    monkeypatch.setattr(pure.train, "make_optimizer", lambda *a: made.append(make_optimizer(*a)) or made[-1])
    out = tmp_path / "run"
    train(_cfg(TINY_LORA, out, hq_folder, "max_steps=1", "data.max_images=2"), progress=False)
    changed = ["optim.weight_decay=0.25", "optim.betas=[0.5,0.75]", "optim.eps=0.001"]
    train(
        _cfg(TINY_LORA, out, hq_folder, "max_steps=2", "data.max_images=2", "resume=latest", *changed),
        progress=False,
    )
    noted = "optim.betas=[0.9, 0.95] -> [0.5, 0.75], optim.eps=1e-08 -> 0.001, optim.weight_decay=0.0 -> 0.25"
    assert noted in capsys.readouterr().out
    (group,) = made[-1].param_groups  # LoRA: matrices only
    assert (group["weight_decay"], group["betas"], group["eps"]) == (0.25, (0.5, 0.75), 0.001)
    assert made[-1].state  # the moments are the checkpoint's


def test_a_checkpoint_without_its_settings_or_with_another_alpha_is_not_resumed(tmp_path):
    checkpoint = tmp_path / "checkpoints" / "step-000002"
    checkpoint.mkdir(parents=True)
    cfg = load_config(TrainConfig, TINY_LORA, [f"output_dir={tmp_path}"])
    for damage in (None, "", "# nothing\n"):  # missing or empty: never resumed unchecked
        if damage is not None:
            (checkpoint / "config.yaml").write_text(damage)
        with pytest.raises(CheckpointError, match=r"cannot read .*config.yaml .*cannot be checked"):
            check_resumable(checkpoint, cfg)
    (checkpoint / "config.yaml").write_text(to_yaml(cfg))
    other = load_config(
        TrainConfig, TINY_LORA, [f"output_dir={tmp_path}", f"lora.alpha={cfg.lora.alpha * 2}"]
    )
    with pytest.raises(ConfigError, match=r"saved with lora.alpha="):  # it scales the adapters trained so far
        check_resumable(checkpoint, other)
    seeds = "backbone.tiny.seed=0 (now 7), vq.seed=0 (now 3)"
    for changed, said in (  # other weights under the adapters, other codes for the same images
        (["backbone.tiny.seed=7", "vq.seed=3"], seeds),
        (["backbone.source=models/b", "vq.channels=64"], "backbone.source=tiny (now models/b), vq.channels"),
    ):
        other = load_config(TrainConfig, TINY_LORA, [f"output_dir={tmp_path}", *changed])
        with pytest.raises(ConfigError, match=rf"saved with {re.escape(said)}"):
            check_resumable(checkpoint, other)
    released = [f"output_dir={tmp_path}", "backbone.source=/hub/PURE", "vq.source=/hub/vq.pt"]
    (checkpoint / "config.yaml").write_text(to_yaml(load_config(TrainConfig, TINY_LORA, released)))
    moved = ["backbone.source=models/PURE", "vq.source=models/vq.pt"]  # the same files, elsewhere
    assert check_resumable(checkpoint, load_config(TrainConfig, TINY_LORA, released + moved)) == ""


def test_merge_refuses_an_output_the_run_would_prune_and_a_checkpoint_without_adapter_config(tmp_path):
    checkpoint = tmp_path / "checkpoints" / "step-000003"
    (checkpoint / "adapter").mkdir(parents=True)
    (checkpoint / "trainer.json").write_text("{}")
    (checkpoint / "config.yaml").write_text(to_yaml(load_config(TrainConfig, TINY_LORA)))
    for inside in (checkpoint / "merged", tmp_path / "checkpoints" / "merged"):
        with pytest.raises(ConfigError, match=r"is inside .*checkpoints, which training prunes"):
            merge_adapter(checkpoint, inside)
    with pytest.raises(
        CheckpointError, match=r"adapter_config.json is missing: the checkpoint is incomplete"
    ):
        merge_adapter(checkpoint, tmp_path / "merged")


def test_captions_that_describe_no_image_and_shards_that_are_images(tmp_path, hq_folder):
    manifest = tmp_path / "captions.jsonl"
    manifest.write_text('{"image": "./nothing.png", "description": "A cat."}\n')
    cfg = load_config(TrainConfig, TINY_LORA, [f"data.hq_folder={hq_folder}", f"data.captions={manifest}"])
    from pure.data.image_folder import ImageFolderExamples

    with pytest.raises(DataError, match=r"describes none of the images in data.hq_folder=.*'./nothing.png'"):
        ImageFolderExamples(cfg.data, None, None, None)
    with pytest.raises(DataError, match=rf"data.shards={hq_folder} holds images, not prepared shards"):
        ShardDataset(hq_folder)


class _LossGoesNan(torch.utils.data.Dataset):
    """Examples whose labels are all masked (cross-entropy over nothing: nan) from the ``good``-th read on."""

    def __init__(self, good: int) -> None:
        self.good, self.reads = good, 0

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        self.reads += 1
        ids = torch.arange(1, 40) + index
        labels = ids.clone() if self.reads <= self.good else torch.full_like(ids, IGNORE_INDEX)
        return {"ids": ids, "labels": labels}


def test_a_loss_that_becomes_nan_stops_the_run_before_it_is_saved(tmp_path):
    out = tmp_path / "run"
    cfg = load_config(
        TrainConfig,
        TINY_FULL,
        [f"output_dir={out}", "batch_size=1", "max_steps=6", "save_every=2", "log.every=1", "keep_last=0"],
    )
    with pytest.raises(DivergedError) as err:
        train(cfg, dataset=_LossGoesNan(good=2))
    message = str(err.value)
    assert "became nan or inf by step 3" in message and "optim.lr" in message, message
    assert f"resume=latest continues from {out / 'checkpoints' / 'step-000002'}" in message
    assert [c.name for c in (out / "checkpoints").iterdir()] == ["step-000002"]  # nothing of nan weights
    assert [r["step"] for r in _log(out)] == [1, 2]  # no record of a nan loss (not JSON)
    assert err.value.exit_code == 1


def test_a_blank_description_trains_on_the_default_text(tmp_path, hq_folder):
    """As in prepare_data.py, an empty description is none: the image trains on data.default_text (never on
    an empty answer), is counted as undescribed, and a manifest of blank ones describes nothing."""
    from pure.data.image_folder import ImageFolderExamples
    from pure.model import load_text_side
    from pure.sequence import conversation
    from pure.vq import load_vq

    folder = tmp_path / "hq"
    folder.mkdir()
    first, second = sorted(hq_folder.glob("*.png"))[:2]
    shutil.copy(first, folder / "a.png")
    shutil.copy(second, folder / "b.png")
    manifest = tmp_path / "captions.jsonl"
    manifest.write_text(
        '{"image": "a.png", "description": "A cat."}\n{"image": "b.png", "description": " "}\n'
    )
    settings = [f"data.hq_folder={folder}", f"data.captions={manifest}", "data.size=32"]
    cfg = load_config(TrainConfig, TINY_LORA, settings)
    tokenizer, vocab = load_text_side(backbone_folder(BackboneConfig(source="tiny")))
    vq = load_vq("tiny")
    notes: list[str] = []
    dataset = ImageFolderExamples(cfg.data, tokenizer, vocab, vq, notes.append)
    assert (
        notes[0] == f"note: 1 of 2 images have no description in {manifest}: they train on data.default_text"
    )
    assert notes[1].startswith(  # a description alone is the whole answer here: said, not silent
        f"note: 1 of 1 descriptions in {manifest} do not open with PURE's degradation sentence (e.g. "
        "'Medium blur, small noise.')"
    )
    notes.clear()
    other = dataclasses.replace(cfg.data, default_text="A photo.")  # the example is PURE's sentence, not this
    ImageFolderExamples(other, tokenizer, vocab, vq, notes.append)
    assert "degradation sentence (e.g. 'Medium blur, small noise.')" in notes[1]
    notes.clear()
    manifest.write_text('{"image": "a.png", "description": "Large blur, medium noise. A cat."}\n')
    ImageFolderExamples(cfg.data, tokenizer, vocab, vq, notes.append)
    assert notes == [
        f"note: 1 of 2 images have no description in {manifest}: they train on data.default_text"
    ]
    manifest.write_text(
        '{"image": "a.png", "description": "A cat."}\n{"image": "b.png", "description": " "}\n'
    )
    codes = torch.zeros(4, 4, dtype=torch.long)  # 32 px: 4 x 4 codes; only the text's length matters
    with_default = len(conversation(tokenizer, vocab, codes, cfg.data.default_text, codes)[0])
    empty = len(conversation(tokenizer, vocab, codes, "", codes)[0])
    assert len(dataset[1]["ids"]) == with_default != empty
    manifest.write_text('{"image": "b.png", "description": ""}\n')
    with pytest.raises(DataError, match=r"describes none of the images .*it holds no description"):
        ImageFolderExamples(cfg.data, tokenizer, vocab, vq, notes.append)


def test_wandb_mode_from_the_environment_and_a_wandb_that_cannot_start_are_one_line(tmp_path, monkeypatch):
    """WANDB_MODE=offline (a cluster without internet) was overridden by log.wandb_mode's default, online, and
    the run ended in wandb's traceback (UsageError: No API key configured) after the model had loaded."""
    from pure.train import check_wandb_mode, start_trackers

    log = load_config(TrainConfig, TINY_LORA, ["log.wandb=true"]).log
    monkeypatch.setenv("WANDB_MODE", "offline")
    with pytest.raises(
        ConfigError, match=r"WANDB_MODE=offline is set, but log.wandb_mode=online .*log.wandb_mode=offline"
    ):
        check_wandb_mode(log)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    with pytest.raises(ConfigError, match=r"set log.wandb=false"):
        check_wandb_mode(log)
    for agrees in ("online", "run"):
        monkeypatch.setenv("WANDB_MODE", agrees)
        check_wandb_mode(log)
    check_wandb_mode(dataclasses.replace(log, wandb=False))  # not used: no matter

    class NotLoggedIn:
        def init_trackers(self, *args, **kwargs):
            raise RuntimeError("No API key configured.\nUse `wandb login` to log in.")

    with pytest.raises(
        ConfigError, match=r"wandb could not start a run \(RuntimeError: No API key configured\. Use"
    ) as err:
        start_trackers(NotLoggedIn(), log, tmp_path, {})
    assert "\n" not in str(err.value)


def test_merge_takes_the_base_from_base_where_the_checkpoint_came_from_another_machine(tmp_path, capsys):
    """A checkpoint keeps the absolute path of the base it was trained on; copied to another machine,
    merge_lora.py stopped at 'model folder ... does not exist' and had no way to be told where the base is."""
    cfg = load_config(TrainConfig, TINY_LORA, [f"output_dir={tmp_path}"])
    base = backbone_folder(cfg.backbone)
    checkpoint = tmp_path / "step-000001"
    model = apply_lora(load_backbone(str(base), dtype=torch.float32), cfg.lora, rows=[])
    model.save_pretrained(str(checkpoint / "adapter"))
    elsewhere = dataclasses.replace(cfg, backbone=dataclasses.replace(cfg.backbone, source="/cluster/base"))
    (checkpoint / "config.yaml").write_text(to_yaml(elsewhere))
    (checkpoint / "trainer.json").write_text('{"step": 1}')
    assert merge_main([str(checkpoint), str(tmp_path / "merged")]) == 2
    err = capsys.readouterr().err
    assert "model folder /cluster/base does not exist" in err and f"{checkpoint / 'config.yaml'} names" in err
    assert "pass --base DIR" in err and not (tmp_path / "merged").exists()
    assert merge_main([str(checkpoint), str(tmp_path / "merged"), "--base", str(base)]) == 0
    assert load_backbone(str(tmp_path / "merged"), dtype=torch.float32).config.vocab_size == TINY_VOCAB_SIZE


class _KillsItsWorker(torch.utils.data.Dataset):
    """Examples whose loading kills the data-loader worker process, as the kernel's OOM killer or a full
    /dev/shm (Docker's 64 MB) does."""

    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int) -> dict:
        import signal

        if torch.utils.data.get_worker_info() is not None:
            os.kill(os.getpid(), signal.SIGKILL)
        return {"ids": torch.arange(1, 9), "labels": torch.arange(1, 9)}


@pytest.mark.slow
def test_a_data_loader_worker_that_dies_is_one_line_with_the_fix(tmp_path, hq_folder):
    """A worker killed while loading: one line naming data.num_workers and --shm-size (torch's RuntimeError
    traceback before), exit 1, as an error of a started run."""
    cfg = _cfg(TINY_LORA, tmp_path / "run", hq_folder, "max_steps=2", "data.num_workers=1")
    with pytest.raises(
        WorkerDiedError, match=r"a data-loader worker process died \(.*\): .*data.num_workers lower"
    ):
        train(cfg, dataset=_KillsItsWorker(), progress=False)
    assert WorkerDiedError.exit_code == 1
