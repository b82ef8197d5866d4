"""The GPU check runs as it stands: ``benchmarks/gpu_check.sh --dry-run`` does every stage on the CPU,
and its stage runner keeps results through errors, deadlines and kills."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_7b import Stages  # noqa: E402


def test_stages_record_errors_and_skips_and_save_after_each(tmp_path):
    path = tmp_path / "check.json"
    stages = Stages(str(path), deadline=60.0, sync=lambda: None)
    assert stages.run("copy_gbps", lambda: 3.5) == 3.5
    assert json.loads(path.read_text()) == {"copy_gbps": 3.5}  # saved before the next stage starts

    def crash():
        raise ValueError("capture failed")

    assert stages.run("batch1", crash) == {"error": "ValueError: capture failed"}
    assert stages.run("batch8", lambda: {"tokens_per_s": 1.0}) == {"tokens_per_s": 1.0}  # the next one runs
    skipped = stages.run("full_tile", lambda: pytest.fail("must not start"), cost_s=120.0)
    assert "deadline" in skipped["skipped"]
    quantize: dict = {}
    stages.results["quantize"] = quantize
    stages.run("int8", lambda: {"weights_gib": 7.2}, into=quantize)
    saved = json.loads(path.read_text())
    assert saved["batch1"]["error"] and saved["batch8"] == {"tokens_per_s": 1.0}
    assert saved["quantize"] == {"int8": {"weights_gib": 7.2}} and "full_tile" in saved
    assert stages.failed == ["batch1"] and not list(tmp_path.glob("*.tmp"))


def test_stages_stop_after_the_device_fails(tmp_path):
    def sync():
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    stages = Stages(str(tmp_path / "check.json"), deadline=None, sync=sync)
    stages.run("batch1", lambda: 1 / 0)
    assert "device failed earlier" in stages.run("batch8", lambda: pytest.fail("must not start"))["skipped"]


def test_gpu_check_names_the_missing_package(tmp_path):
    """Where a package is missing and no wheels were brought, one message names it and the fix."""
    (tmp_path / "omegaconf.py").write_text("raise ImportError('No module named omegaconf')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    script = tmp_path / "tree" / "benchmarks"
    script.mkdir(parents=True)  # a copy of the script in a tree without .whl/
    (script / "gpu_check.sh").write_text((ROOT / "benchmarks" / "gpu_check.sh").read_text())
    run = subprocess.run(
        ["bash", str(script / "gpu_check.sh"), str(tmp_path / "out")], capture_output=True, text=True, env=env
    )
    assert run.returncode == 2
    assert "omegaconf" in run.stderr and "--fetch-wheels" in run.stderr and "Traceback" not in run.stderr


@pytest.mark.slow
def test_gpu_check_dry_run_writes_one_json(tmp_path):
    run = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    results = json.loads((tmp_path / "gpu_check.json").read_text())
    assert results["graph_matches_eager"] is None  # no CUDA graphs on the CPU: not claimed as checked
    assert results["graph_matches_eager_int8_cache"] is None
    assert results["copy_gbps"] > 0 and results["reference_style_tokens_per_s"] > 0
    for batch in (1, 2):
        row = results[f"batch{batch}"]
        assert row["tokens_per_s"] > 0 and 0 < row["fraction_of_floor"]
    assert results["full_tile"]["tokens"] == results["image_tokens"]  # the whole image body was written
    assert set(results["quantize"]) == {"none", "int8", "int4"}  # issue 14: batch 1 per backbone.quantize
    for mode, row in results["quantize"].items():
        for kv_cache in ("model", "int8"):  # restore.kv_cache per mode
            run = row[f"kv_{kv_cache}"]
            assert run["fits"] and run["tokens_per_s"] > 0, (mode, kv_cache)
        assert row.get("graph_matches_eager") is None, mode
    weights = {mode: row["weights_gib"] for mode, row in results["quantize"].items()}
    assert weights["int4"] < weights["int8"] < weights["none"]
    speculative = {row["run"]: row for row in results["speculative"]["7b"]}  # issue 17
    assert set(speculative) == {"plain", "jacobi", "lq", "lq+jacobi", "lq+jacobi, always"}
    assert all(row["tokens_per_s"] > 0 and row["forwards_per_image"] > 0 for row in speculative.values())
