"""The GPU check runs as it stands: ``benchmarks/gpu_check.sh --dry-run`` does every stage on the CPU."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


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
    assert results["graph_matches_eager"] is True
    assert results["graph_matches_eager_int8_cache"] is True
    assert results["copy_gbps"] > 0 and results["reference_style_tokens_per_s"] > 0
    for batch in (1, 2):
        row = results[f"batch{batch}"]
        assert row["tokens_per_s"] > 0 and 0 < row["fraction_of_floor"]
    assert results["full_tile_tokens"] == results["image_tokens"]  # the whole image body was written
    assert set(results["quantize"]) == {"none", "int8", "int4"}  # issue 14: batch 1 per backbone.quantize
    for mode, row in results["quantize"].items():
        for kv_cache in ("model", "int8"):  # restore.kv_cache per mode
            run = row[f"kv_{kv_cache}"]
            assert run["fits"] and run["tokens_per_s"] > 0, (mode, kv_cache)
        assert row.get("graph_matches_eager", mode == "none") is True, mode
    weights = {mode: row["weights_gib"] for mode, row in results["quantize"].items()}
    assert weights["int4"] < weights["int8"] < weights["none"]
    speculative = {row["run"]: row for row in results["speculative"]["7b"]}  # issue 17
    assert set(speculative) == {"plain", "jacobi", "lq", "lq+jacobi", "lq+jacobi, always"}
    assert all(row["tokens_per_s"] > 0 and row["forwards_per_image"] > 0 for row in speculative.values())
