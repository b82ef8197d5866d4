"""The golden tests' view of a fixture set (tests/reference.py): another set ($PURE_REFERENCE_DIR) may
name its inputs otherwise or hold only some of the sub-fixtures; what it lacks is skipped, not an error."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.reference import require

ROOT = Path(__file__).resolve().parents[1]


def _golden(folder: Path, marks: str = "golden") -> str:
    """Run the golden tests (those marked ``golden``, as ``marks`` selects them) on the fixture set
    ``folder``; their summary line (asserting a clean exit)."""
    env = dict(os.environ, PURE_REFERENCE_DIR=str(folder), PYTHONPATH=str(ROOT))
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", marks]
    command += ["tests", "--ignore", "tests/test_reference.py"]
    run = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:]
    return run.stdout.strip().splitlines()[-1]


def _renamed_and_cut(source: Path, folder: Path) -> None:
    """A copy of the fixture set ``source`` made as another set in the same formats could be: the VQ images
    and colour-fix pairs renamed, every other sampler state (renumbered), the backbone sequence cut a few
    tokens into the answer (causal: the prefix's numbers stay; loss and z-loss recomputed from the stored
    log-sum-exps and logit columns), the trajectory's first 10 steps moved into the prompt (the image open
    there), and no layout/ (its test skips)."""
    shutil.copytree(source, folder, ignore=shutil.ignore_patterns("layout"))
    for path in [folder, *folder.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)

    def rename(meta_path: Path, section: str | None, suffixes: tuple[str, ...]) -> None:
        meta = json.loads(meta_path.read_text())
        names = meta[section] if section else meta
        renamed = {f"other_{i}": names[name] for i, name in enumerate(names)}
        for i, name in enumerate(names):
            for suffix in suffixes:
                (meta_path.parent / f"{name}{suffix}").rename(meta_path.parent / f"other_{i}{suffix}")
        meta_path.write_text(json.dumps(dict(meta, **{section: renamed}) if section else renamed))

    rename(folder / "vq8" / "vq8.json", "images", (".npz", ".png", "_decoded.png"))
    parts = ("_target.png", "_source.png", "_wavelet.png", "_adain.png")
    rename(folder / "colorfix" / "colorfix_meta.json", None, (".npz", *parts))

    meta = json.loads((folder / "sampler" / "sampler_states.json").read_text())
    arrays = dict(np.load(folder / "sampler" / "sampler_states.npz"))
    kept = {"score_bank": arrays["score_bank"]}
    meta["states"] = meta["states"][::-2]
    for new, state in enumerate(meta["states"]):
        for part in ("input_ids", "mm_keep", "topk_keep", "topk10_keep"):
            kept[f"s{new:02d}_{part}"] = arrays[f"s{state['index']:02d}_{part}"]
        state["index"] = new
    (folder / "sampler" / "sampler_states.json").write_text(json.dumps(meta))
    np.savez(folder / "sampler" / "sampler_states.npz", **kept)

    backbone = dict(np.load(folder / "backbone" / "backbone.npz"))
    labels = backbone["labels"]
    t = int(np.flatnonzero(labels >= 0)[0]) + 6
    for key in ("input_ids", "labels", "embeddings", "final_hidden", "logits_at_cols", "logsumexp", "argmax"):
        backbone[key] = backbone[key][:t]
    backbone["layer_out"] = backbone["layer_out"][:, :t]
    rows = backbone["full_positions"] < t
    for key in ("full_positions", "logits_full"):
        backbone[key] = backbone[key][rows]
    lse, labels = backbone["logsumexp"].astype(np.float64), backbone["labels"]
    column = {int(c): i for i, c in enumerate(backbone["logit_cols"])}
    targets = [(i, column[int(labels[i + 1])]) for i in range(t - 1) if labels[i + 1] >= 0]
    backbone["loss"] = np.float32(np.mean([lse[i] - backbone["logits_at_cols"][i, c] for i, c in targets]))
    backbone["z_loss_raw"] = np.float32((lse[labels >= 0] ** 2).mean())
    np.savez(folder / "backbone" / "backbone.npz", **backbone)

    trajectory = dict(np.load(folder / "cfg" / "cfg_trajectory.npz"))
    trajectory["prompt_ids"] = np.concatenate([trajectory["prompt_ids"], trajectory["step_token"][:10]])
    for key in [k for k in trajectory if k.startswith("step_")]:
        trajectory[key] = trajectory[key][10:]
    np.savez(folder / "cfg" / "cfg_trajectory.npz", **trajectory)


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
    summary = _golden(tmp_path)
    assert "skipped" in summary and "error" not in summary and "failed" not in summary, summary
    assert "passed" not in summary, summary  # nothing here is enough for any golden test


@pytest.mark.slow
def test_golden_tests_pass_on_a_renamed_and_cut_copy(reference_dir, tmp_path):
    """Nothing in the golden tests is tied to the public set's names, counts, lengths or sizes: they pass
    on a consistent copy (:func:`_renamed_and_cut`: a shorter sequence, fewer states, other names, an
    image already open in the trajectory's prompt), as on another set made the same way."""
    require(reference_dir, "vq8/vq8.json", "colorfix/colorfix_meta.json", "sampler/sampler_states.json")
    require(reference_dir, "backbone/backbone.npz", "cfg/cfg_trajectory.npz")
    _renamed_and_cut(reference_dir, tmp_path / "other")
    summary = _golden(tmp_path / "other", "golden and not slow")
    assert "passed" in summary and "error" not in summary and "failed" not in summary, summary
