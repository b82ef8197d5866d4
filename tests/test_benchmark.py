"""scripts/benchmark.py (pure/benchmark.py): inference in this process, then evaluation."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
from PIL import Image

import pure.cli
from pure import benchmark as B
from pure import pairing as P
from pure.cli import benchmark_main
from tests.fakes import random_image

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may wait on the network
ROOT = Path(__file__).resolve().parents[1]


def test_benchmark_paths(tmp_path):
    with pytest.raises(P.EvaluationError, match=r"benchmark 'realsr' needs .*realsr/lr/"):
        B.benchmark_paths("realsr", tmp_path)
    (tmp_path / "realsr" / "lr").mkdir(parents=True)
    (tmp_path / "realsr" / "hr").mkdir()
    paths = B.benchmark_paths("realsr", tmp_path, tmp_path / "run")
    assert paths["sr"] == tmp_path / "run" / "sr" and paths["json"] == tmp_path / "run" / "metrics.json"
    assert B.benchmark_paths("realsr", tmp_path)["run"].parent == Path("runs") / "realsr"
    typo = rf"needs {tmp_path}/realsr_x4/lr/: .*\({tmp_path} holds realsr\)$"
    with pytest.raises(P.EvaluationError, match=typo):
        B.benchmark_paths("realsr_x4", tmp_path)  # a typo: the sets that are there


def test_benchmark_named_by_its_path_is_refused_before_writing_into_it(tmp_path, capsys):
    """The set's folder given as its name: runs/ + an absolute path is that path, so the run (restorations,
    metrics) went into the test set's own folder."""
    random_image(tmp_path / "realsr" / "lr", "a.png", (8, 8), seed=0)
    random_image(tmp_path / "realsr" / "hr", "a.png", (32, 32), seed=0)
    for name in (str(tmp_path / "realsr"), f"{tmp_path}/realsr/"):
        assert benchmark_main([name, "--config", "configs/tiny.yaml", "--skip-inference"]) == 2
        assert capsys.readouterr().err == (
            f"error: benchmark {name!r} is a path; the name is a test set's folder under --root: pass "
            f"--root {tmp_path} realsr\n"
        )
    assert sorted(p.name for p in (tmp_path / "realsr").iterdir()) == ["hr", "lr"]


def test_benchmark_command_passes_unknown_arguments_to_inference(monkeypatch, tmp_path, capsys):
    calls = []

    def fake_run_inference(args):
        calls.append((args.input, args.output, args.config, args.overrides, args.no_progress, args.ext))
        return 0

    monkeypatch.setattr(pure.cli, "run_inference", fake_run_inference)
    random_image(tmp_path / "realsr" / "lr", "a.png", (8, 8), seed=0)
    random_image(tmp_path / "realsr" / "hr", "a.png", (16, 16), seed=0)
    run = tmp_path / "run"
    (run / "sr").mkdir(parents=True)
    shutil.copy(tmp_path / "realsr" / "hr" / "a.png", run / "sr" / "a.png")
    config = str(ROOT / "configs" / "tiny.yaml")
    argv = ["realsr", "--root", str(tmp_path), "--config", config, "--metrics", "psnr", "sampling.seed=1"]
    assert benchmark_main([*argv, "--run", str(run), "--no-progress", "--outscale", "2"]) == 0
    lr = str(tmp_path / "realsr" / "lr")
    # --no-progress: both stages; PNG outputs (infer.py's auto would write JPEG for JPEG LR images)
    assert calls == [(lr, str(run / "sr"), [config], ["sampling.seed=1"], True, "png")]
    calls.clear()  # the set's name may follow an override too
    argv = ["--root", str(tmp_path), "--config", config, "sampling.seed=1", "realsr", "--metrics", "psnr"]
    assert (
        benchmark_main([*argv, "--run", str(run), "--no-progress", "--outscale", "2", "--skip-existing"]) == 0
    )
    assert calls == [(lr, str(run / "sr"), [config], ["sampling.seed=1"], True, "png")]
    assert "(replacing earlier results there)" in capsys.readouterr().err  # the first call's, rescored
    scored = (run / "metrics.json").read_text()
    again = ["realsr", "--root", str(tmp_path), "--run", str(run), "--skip-inference", "--no-progress"]
    assert benchmark_main([*again, "--metrics", "niqe"]) == 1  # no weights here: no metric runs
    assert (run / "metrics.json").read_text() == scored  # the earlier results stay


def test_benchmark_batch_size_and_device_are_the_metrics(monkeypatch, tmp_path):
    """As the README and --help say: --batch-size and --device are scoring's; inference takes
    restore.batch_size=N and device=NAME as overrides."""

    class Scored(Exception):
        pass

    def fake_evaluate(*args, **kwargs):
        raise Scored(kwargs)

    calls = []
    monkeypatch.setattr(pure.cli, "run_inference", lambda args: calls.append(args) or 0)
    monkeypatch.setattr(B, "evaluate_folders", fake_evaluate)
    random_image(tmp_path / "s" / "lr", "a.png", (8, 8), seed=0)
    random_image(tmp_path / "s" / "hr", "a.png", (16, 16), seed=0)
    argv = ["s", "--root", str(tmp_path), "--run", str(tmp_path / "run"), "--outscale", "2"]
    with pytest.raises(Scored) as scored:
        benchmark_main([*argv, "--batch-size", "3", "--device", "cpu", "restore.batch_size=2", "device=cpu"])
    (inference,) = calls
    assert inference.batch_size is None and inference.device is None
    assert inference.overrides == ["restore.batch_size=2", "device=cpu"]
    metrics = scored.value.args[0]
    assert metrics["batch_size"] == 3 and str(metrics["device"]) == "cpu"


def test_an_interrupted_benchmark_says_how_to_continue_its_run(monkeypatch, tmp_path, capsys):
    """Inference stopped by Ctrl-C or SIGTERM (its exit 130) is an interruption, not a failure: exit 130
    and the hint names the time-stamped run folder, which a plain rerun would not reuse."""
    monkeypatch.setattr(pure.cli, "run_inference", lambda args: 130)
    random_image(tmp_path / "realsr" / "lr", "a.png", (8, 8), seed=0)
    random_image(tmp_path / "realsr" / "hr", "a.png", (32, 32), seed=0)
    monkeypatch.chdir(tmp_path)
    argv = [
        "realsr",
        "--root",
        str(tmp_path),
        "--config",
        str(ROOT / "configs" / "tiny.yaml"),
        "--no-progress",
    ]
    assert benchmark_main(argv) == 130
    err = capsys.readouterr().err.strip()
    assert "failed" not in err
    assert re.fullmatch(
        r"interrupted: to continue this run, add --run runs/realsr/\d{8}-\d{6} --skip-existing", err
    )
    (tmp_path / "file").write_text("x")
    assert benchmark_main([*argv, "--run", "file"]) == 2
    assert (
        capsys.readouterr().err.strip()
        == "error: --run file is a file; pass a folder for the run (its sr/, metrics.json, ...)"
    )


def test_benchmark_chains_inference_and_evaluation(tmp_path):
    """With a stand-in for inference (a bicubic x4 upscale) so no model is needed."""
    for i in range(2):
        random_image(tmp_path / "sets" / "tiny" / "lr", f"{i}.png", (12, 10), seed=i)
        random_image(tmp_path / "sets" / "tiny" / "hr", f"{i}.png", (48, 40), seed=i)

    def fake_infer(lr: Path, sr: Path) -> int:
        sr.mkdir(parents=True)
        for p in lr.iterdir():
            im = Image.open(p)
            im.resize((im.width * 4, im.height * 4), Image.BICUBIC).save(sr / p.name)
        return 0

    evaluation, paths = B.run_benchmark(
        "tiny", tmp_path / "sets", tmp_path / "run", fake_infer, metrics=["psnr"], progress=False
    )
    assert evaluation.images == ["0.png", "1.png"] and 0 < evaluation.mean["psnr"] < 80
    assert json.loads(paths["json"].read_text())["sr"] == str(paths["sr"])
    assert paths["csv"].read_text().startswith("image,psnr\n0.png,")
    with pytest.raises(P.EvaluationError, match=r"failed for every image \(see above\)"):
        B.run_benchmark("tiny", tmp_path / "sets", tmp_path / "run2", lambda lr, sr: 1, metrics=["psnr"])


def test_a_crop_border_that_leaves_nothing_is_refused_before_inference(tmp_path):
    """--crop-border that cuts an HR image away entirely was refused only when scoring, after the whole set
    had been restored (hours on a GPU)."""
    random_image(tmp_path / "sets" / "tiny" / "lr", "a.png", (12, 10), seed=0)
    random_image(tmp_path / "sets" / "tiny" / "hr", "a.png", (48, 40), seed=0)
    hr = tmp_path / "sets" / "tiny" / "hr" / "a.png"
    ran = []
    with pytest.raises(
        P.EvaluationError,
        match=rf"^before inference: --crop-border 20 cuts all of {re.escape(str(hr))} \(48x40 px\) away; ",
    ):
        B.run_benchmark(
            "tiny",
            tmp_path / "sets",
            tmp_path / "run",
            lambda lr, sr: ran.append(1),
            outscale=4,
            metrics=["psnr"],
            crop_border=20,
        )
    assert ran == []
    B.check_scale(hr.parents[1] / "lr", hr.parent, 4, crop_border=19)  # 2 px left each way: scored


def test_benchmark_refuses_up_front_what_could_never_be_scored(monkeypatch, tmp_path, capsys):
    """A scale the test set does not have (HR = LR x outscale, checked from the headers), inference settings
    with --skip-inference, and a typo in infer.py's flags: one line each, before any inference."""
    monkeypatch.setattr(pure.cli, "run_inference", lambda args: pytest.fail("inference ran"))
    random_image(tmp_path / "realsr" / "lr", "a.png", (12, 10), seed=0)
    random_image(tmp_path / "realsr" / "hr", "a.png", (48, 40), seed=0)
    base = ["realsr", "--root", str(tmp_path), "--run", str(tmp_path / "run"), "--no-progress"]
    assert benchmark_main([*base, "--outscale", "3"]) == 2
    lr, hr = tmp_path / "realsr" / "lr" / "a.png", tmp_path / "realsr" / "hr" / "a.png"
    assert capsys.readouterr().err == (
        f"error: {lr} is 12x10: at --outscale 3 its restoration is 36x30, but {hr} is 48x40; pass the "
        "test set's scale (--outscale 4?)\n"
    )
    random_image(tmp_path / "realsr" / "hr", "a.png", (51, 43), seed=0)  # not a multiple of 4 (Set14)
    assert benchmark_main([*base, "--outscale", "4"]) == 2
    assert capsys.readouterr().err == (
        f"error: {hr} is 51x43, not a multiple of --outscale 4: its LR {lr} is 12x10, for 48x40 HR pixels; "
        "crop the HR images to a multiple of 4 (their top-left, as basicsr's mod crop)\n"
    )
    assert benchmark_main([*base, "--skip-inference", "--seed", "5"]) == 2
    assert "--seed 5: inference settings do nothing with --skip-inference" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # an unknown flag is no inference setting: it was called one
        benchmark_main([*base, "--skip-inference", "--bogus", "ft"])
    assert "benchmark.py: error: unrecognized arguments: --bogus" in capsys.readouterr().err
    without_run = [a for a in base if a not in ("--run", str(tmp_path / "run"))]
    assert benchmark_main([*without_run, "--skip-inference"]) == 2  # a new run folder would hold no outputs
    assert "--skip-inference scores an earlier run's outputs: name it with --run, e.g. --run runs" in (
        capsys.readouterr().err
    )
    with pytest.raises(SystemExit):
        benchmark_main([*base, "--tilee", "64"])
    assert "benchmark.py: error: unrecognized arguments: --tilee; did you mean --tile for --tilee? (" in (
        capsys.readouterr().err
    )
    assert not (tmp_path / "run").exists()


def test_benchmark_takes_infer_flags_before_the_name_and_scores_suffixed_outputs(monkeypatch, tmp_path):
    """``--config FILE NAME`` and ``--threads 1 NAME``: the flag's value is never the set's name; outputs
    written with ``--suffix x4`` are scored against their HR images without a --sr-name."""
    calls = []

    def fake_run_inference(args):  # the HR image as the "restoration", named as infer.py names it
        calls.append((args.config, args.threads, args.suffix))
        Path(args.output).mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp_path / "realsr" / "hr" / "a.png", Path(args.output) / f"a_{args.suffix}.png")
        return 0

    monkeypatch.setattr(pure.cli, "run_inference", fake_run_inference)
    random_image(tmp_path / "realsr" / "lr", "a.png", (8, 8), seed=0)
    random_image(tmp_path / "realsr" / "hr", "a.png", (32, 32), seed=0)
    config = str(ROOT / "configs" / "tiny.yaml")
    for i, argv in enumerate(
        (["--config", config, "realsr"], ["--threads", "1", "--config=" + config, "realsr"])
    ):
        run = tmp_path / f"run{i}"
        rest = [
            "--root",
            str(tmp_path),
            "--run",
            str(run),
            "--metrics",
            "psnr",
            "--no-progress",
            "--suffix",
            "x4",
        ]
        assert benchmark_main([*argv, *rest]) == 0
        assert json.loads((run / "metrics.json").read_text())["count"] == 1
    assert calls == [([config], None, "x4"), ([config], 1, "x4")]


def test_inference_that_failed_some_images_exits_1_and_says_how_to_go_on(monkeypatch, tmp_path, capsys):
    def some_failed(args) -> int:  # e.g. one LR file unreadable: the others restored
        random_image(Path(args.output), "a.png", (16, 16), seed=0)
        return 1

    monkeypatch.setattr(pure.cli, "run_inference", some_failed)
    random_image(tmp_path / "realsr" / "lr", "a.png", (8, 8), seed=0)
    random_image(tmp_path / "realsr" / "hr", "a.png", (16, 16), seed=0)
    run = tmp_path / "run"
    argv = ["realsr", "--root", str(tmp_path), "--run", str(run), "--outscale", "2", "--metrics", "psnr"]
    assert benchmark_main(argv) == 1  # the run started: not 2
    err = capsys.readouterr().err
    assert f"failed for some images (see above): fix or remove them in {tmp_path / 'realsr' / 'lr'}" in err
    assert f"--run {run} --skip-existing" in err and f"--run {run} --skip-inference" in err


def test_missing_weights_are_their_own_message_not_a_write_error(monkeypatch, tmp_path, capsys):
    from pure.download import WeightsMissingError

    def offline(args) -> int:
        raise WeightsMissingError("the weights this run needs are not on this machine")

    monkeypatch.setattr(pure.cli, "run_inference", offline)
    random_image(tmp_path / "realsr" / "lr", "a.png", (8, 8), seed=0)
    random_image(tmp_path / "realsr" / "hr", "a.png", (16, 16), seed=0)
    argv = ["realsr", "--root", str(tmp_path), "--run", str(tmp_path / "run"), "--outscale", "2"]
    assert benchmark_main(argv) == 2
    err = capsys.readouterr().err
    assert "error: the weights this run needs are not on this machine" in err and "cannot write" not in err


def test_lr_names_that_pair_no_hr_image_are_refused_before_inference(monkeypatch, tmp_path, capsys):
    """DIV2K's layout (``lr/0801x4.png`` for ``hr/0801.png``) paired nothing, which evaluation found only
    after the whole inference; now refused before it, naming the --sr-name that pairs them, which then also
    lets the scale check see the pairs."""
    monkeypatch.setattr(pure.cli, "run_inference", lambda args: pytest.fail("inference ran"))
    random_image(tmp_path / "div2k" / "lr", "0801x4.png", (12, 10), seed=0)
    random_image(tmp_path / "div2k" / "hr", "0801.png", (48, 40), seed=0)
    base = ["div2k", "--root", str(tmp_path), "--run", str(tmp_path / "run"), "--no-progress"]
    assert benchmark_main([*base, "--metrics", "psnr"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: before inference (restorations keep the LR names): no SR image in ")
    assert err.endswith("pass --sr-name '{stem}x4' (it pairs them)\n")
    assert benchmark_main([*base, "--metrics", "psnr", "--sr-name", "{stem}x4", "--outscale", "2"]) == 2
    assert "0801x4.png is 12x10: at --outscale 2 its restoration is 24x20, but " in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    assert benchmark_main([*base, "--metrics", "psnr", "--sr-name", "{stem}x4", "--suffix", "o"]) == 2
    assert capsys.readouterr().err == (
        "error: --sr-name '{stem}x4' must end with '_o': the outputs carry --suffix o "
        "(e.g. --sr-name '{stem}x4_o')\n"
    )
    assert benchmark_main([*base, "--metrics", "psnr", "--suffix", "o"]) == 2  # the advice names the tail
    assert capsys.readouterr().err.endswith(
        "pass --sr-name '{stem}x4' (it pairs them) (then add '_o', which --suffix adds to the outputs)\n"
    )
    named = ["--sr-name", "{stem}x4_o", "--suffix", "o", "--outscale", "2"]
    assert benchmark_main([*base, "--metrics", "psnr", *named]) == 2  # paired: the scale check sees them
    assert "0801x4.png is 12x10: at --outscale 2 its restoration is 24x20, but " in capsys.readouterr().err
    (tmp_path / "div2k" / "lr" / "0801x4.png").unlink()
    assert benchmark_main([*base, "--metrics", "psnr"]) == 2
    assert f"error: no images in the LR folder {tmp_path / 'div2k' / 'lr'} (" in capsys.readouterr().err


def test_metrics_json_records_what_restored_the_outputs_from_their_sidecars(tmp_path):
    """Not this command's settings: --skip-existing with another adapter scores images restored by both."""
    from pure.benchmark import restored_by

    assert restored_by(tmp_path) == {}
    for name, adapter in (("a", "runs/a/adapter"), ("b", "runs/b/adapter"), ("c", "runs/a/adapter")):
        sidecar = {"output": f"{name}.png", "model": "nonwhy/PURE@abc", "adapter": adapter}
        (tmp_path / f"{name}.json").write_text(json.dumps(sidecar))
    (tmp_path / "notes.json").write_text("[1, 2]")  # not a sidecar
    assert restored_by(tmp_path) == {
        "model": "nonwhy/PURE@abc",
        "adapter": ["runs/a/adapter", "runs/b/adapter"],
    }
    (tmp_path / "d.json").write_text(
        json.dumps({"output": "d.png", "model": "nonwhy/PURE@abc", "adapter": None})
    )
    assert restored_by(tmp_path)["adapter"] == [None, "runs/a/adapter", "runs/b/adapter"]  # null, not "None"
