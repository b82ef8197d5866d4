"""Launching several processes: the checks made before any work (pure/launch.py), and training run for
real on two CPU processes (``accelerate launch --multi_gpu --num_processes 2`` with
``ACCELERATE_USE_CPU=true``: DDP over gloo, since accelerate 1.15 runs no FSDP on the CPU), compared with
one process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from pure.config import TrainConfig, load_config
from pure.launch import WORLD_SIZE_VARIABLES, LaunchError, check_launch, check_processes, launched_processes
from tests.launcher import accelerate_launch

ROOT = Path(__file__).resolve().parents[1]
TINY_FULL = ROOT / "configs" / "train_tiny_full.yaml"
SHARED_HR = Path(os.environ.get("PURE_SHARED_DATA", ROOT.parent / "shared" / "data")) / "realsr-mini" / "hr"
LOSS_RTOL = 1e-5
"""Two processes of batch 1 against one process of batch 2: the same examples per step, but the gradient
is averaged across processes (measured here: losses within 2e-7 relative)."""
WEIGHT_RTOL, WEIGHT_ATOL = 1e-4, 1e-5
"""The weights after those 4 steps, two processes against one (measured here: at most 4.8e-7 apart)."""


def test_launch_checks(monkeypatch):
    for name in (*WORLD_SIZE_VARIABLES, "ACCELERATE_USE_FSDP"):
        monkeypatch.delenv(name, raising=False)
    assert launched_processes() == 1
    check_processes(1)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(LaunchError, match="2 processes were launched, but accelerate sees 1") as err:
        check_processes(1)
    assert "ACCELERATE_USE_CPU=true" in str(err.value) and len(str(err.value).splitlines()) == 1
    check_launch(2, "MULTI_CPU")
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with pytest.raises(LaunchError, match="asks for FSDP, but accelerate runs MULTI_CPU"):
        check_launch(2, "MULTI_CPU")
    check_launch(2, "FSDP")


@pytest.fixture
def hq_folder(tmp_path) -> Path:
    """The real HQ photos of ../shared/data, else smooth synthetic ones."""
    if SHARED_HR.is_dir():
        return SHARED_HR
    for i in range(8):
        Image.linear_gradient("L").rotate(45 * i).resize((96, 96)).convert("RGB").save(tmp_path / f"{i}.png")
    return tmp_path


def _train_overrides(out: Path, hq: Path, batch: int, *extra: str) -> list[str]:
    return [
        f"output_dir={out}",
        f"data.hq_folder={hq}",
        "data.size=32",
        "data.max_images=8",
        f"batch_size={batch}",
        "max_steps=4",
        "save_every=2",
        "keep_last=0",
        "residual_dropout=0",  # dropout masks depend on how a batch is split across processes
        *extra,
    ]


def _weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    return {
        k: v
        for f in sorted((checkpoint / "model").glob("*.safetensors"))
        for k, v in load_file(str(f)).items()
    }


def _losses(out: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in map(json.loads, (out / "log.jsonl").read_text().splitlines())]


@pytest.mark.slow
def test_two_process_training_matches_one_process_and_resumes(tmp_path, hq_folder):
    """Full fine-tune of the tiny model on two CPU processes (DDP over gloo: accelerate 1.15 does not
    run FSDP on the CPU), 4 steps with checkpoints at 2 and 4, against one process with the same global
    batch; then the run cut after step 2 resumes on two processes and ends as the uninterrupted one."""
    from accelerate.state import AcceleratorState, GradientState

    from pure.train import train

    one = tmp_path / "one"
    try:
        train(load_config(TrainConfig, TINY_FULL, _train_overrides(one, hq_folder, 2)))
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()

    env = {**os.environ, "ACCELERATE_USE_CPU": "true"}
    two = tmp_path / "two"
    run = subprocess.run(
        accelerate_launch("train.py", "--config", str(TINY_FULL), *_train_overrides(two, hq_folder, 1)),
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "4 steps of 1 x 1 x 2 sequences" in run.stdout
    one_losses, two_losses = _losses(one), _losses(two)
    assert [s for s, _ in two_losses] == [1, 2, 3, 4]
    for (_, a), (_, b) in zip(one_losses, two_losses, strict=True):
        assert b == pytest.approx(a, rel=LOSS_RTOL)
    mine, theirs = (_weights(run / "checkpoints" / "step-000004") for run in (two, one))
    assert mine.keys() == theirs.keys()
    for name, weight in theirs.items():
        torch.testing.assert_close(mine[name], weight, rtol=WEIGHT_RTOL, atol=WEIGHT_ATOL)

    cut = tmp_path / "cut"
    shutil.copytree(two, cut)
    shutil.rmtree(cut / "checkpoints" / "step-000004")
    run = subprocess.run(
        accelerate_launch(
            "train.py", "--config", str(TINY_FULL), *_train_overrides(cut, hq_folder, 1, "resume=latest")
        ),
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "resumed from" in run.stdout and "step 2" in run.stdout
    assert _losses(cut) == two_losses
