"""The golden tests' view of a fixture set (tests/reference.py): another set ($PURE_REFERENCE_DIR) may
name its inputs otherwise or hold only some of the sub-fixtures; what it lacks is skipped, not an error."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.reference import require

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = [
    "tests/test_vq.py",
    "tests/test_colorfix.py",
    "tests/test_sampling.py",
    "tests/test_model.py",
    "tests/test_generate.py",
    "tests/test_kv_cache.py",
    "tests/test_quantize.py",
    "tests/test_sequence.py",
]
"""The test files that read the fixture set."""


def test_require_skips_naming_the_missing_file(tmp_path):
    (tmp_path / "vq8").mkdir()
    (tmp_path / "vq8" / "vq8.json").write_text("{}")
    assert require(tmp_path, "vq8/vq8.json") == tmp_path
    with pytest.raises(pytest.skip.Exception, match=r"vq8[/\\]img\.npz not found: this fixture set lacks it"):
        require(tmp_path, "vq8/vq8.json", "vq8/img.npz", "vq8/other.npz")


@pytest.mark.slow
def test_a_set_lacking_sub_fixtures_skips_their_tests(tmp_path):
    """A set with only some sub-folders, one of them missing files: every golden test that needs what is
    absent skips; none errors or fails."""
    (tmp_path / "vq8").mkdir()  # a folder without its files
    (tmp_path / "sampler").mkdir()
    (tmp_path / "sampler" / "sampler_states.json").write_text('{"states": []}')  # its npz is missing
    env = dict(os.environ, PURE_REFERENCE_DIR=str(tmp_path), PYTHONPATH=str(ROOT))
    golden = "reference or guard or golden or manifest or preprocessing or float_outputs or codes_equal "
    golden += "or uint8_output or decomposition or float_fixes or entropy_to_k or qk_norm or replay"
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "", "-k", golden, *GOLDEN],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    summary = run.stdout.strip().splitlines()[-1]
    assert run.returncode == 0, run.stdout[-3000:]
    assert "skipped" in summary and "error" not in summary and "failed" not in summary, summary
    assert "passed" not in summary, summary  # nothing here is enough for any golden test
