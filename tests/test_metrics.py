"""Evaluation: pairing by name, the PSNR/SSIM protocol against an independent numpy formula,
offline weight detection, outputs (CSV, JSON, Markdown, compare files), the CLI and the benchmark."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image

import pure.cli
from pure import benchmark as B
from pure import metrics as M
from pure import pairing as P
from pure import reports as R
from pure.cli import benchmark_main, evaluate_main

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may wait on the network
ROOT = Path(__file__).resolve().parents[1]


def _save(folder: Path, name: str, size: tuple[int, int] = (40, 32), seed: int = 0) -> Path:
    """A random RGB image of ``size`` (width, height) at ``folder/name``."""
    folder.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(folder / name)
    return folder / name


@pytest.fixture
def no_weights(tmp_path, monkeypatch):
    """An empty ``$TORCH_HOME`` and Hugging Face cache: every weight file is missing."""
    from huggingface_hub import constants

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    return tmp_path


# ----------------------------------------------------------------------------- pairing


def test_pairing_lists_missing_and_extra(tmp_path):
    for name in ("a.png", "b.png", "c.png"):
        _save(tmp_path / "gt", name)
    for name in ("a.png", "b.jpg", "z.png"):
        _save(tmp_path / "sr", name)
    (tmp_path / "sr" / "notes.txt").write_text("not an image")
    pairing = P.pair_images(tmp_path / "sr", tmp_path / "gt")
    assert [(sr.name, gt.name) for sr, gt in pairing.pairs] == [("a.png", "a.png"), ("b.jpg", "b.png")]
    assert pairing.missing == ["c.png"] and pairing.extra == ["z.png"]


def test_pairing_with_a_name_pattern_and_without_gt(tmp_path):
    _save(tmp_path / "gt", "a.png")
    _save(tmp_path / "sr", "a_out.png")
    pairing = P.pair_images(tmp_path / "sr", tmp_path / "gt", sr_name="{stem}_out")
    assert [(sr.name, gt.name) for sr, gt in pairing.pairs] == [("a_out.png", "a.png")]
    assert P.pair_images(tmp_path / "sr").pairs == [(tmp_path / "sr" / "a_out.png", None)]


@pytest.mark.parametrize(
    "layout, kwargs, message",
    [
        ({}, {}, "SR folder not found"),
        ({"sr": ["a.png"]}, {"sr_name": "out"}, "must contain {stem}"),
        ({"sr": ["a.png", "a.jpg"], "gt": ["a.png"]}, {}, "two SR images share the name 'a'"),
        ({"sr": ["x.png"], "gt": ["a.png"]}, {}, "no SR image in"),
        ({"sr": ["a.png"], "gt": []}, {}, "no images"),
    ],
)
def test_pairing_errors_name_the_problem(tmp_path, layout, kwargs, message):
    for side, names in layout.items():
        (tmp_path / side).mkdir()
        for name in names:
            _save(tmp_path / side, name)
    with pytest.raises(P.EvaluationError, match=message.replace("{", r"\{").replace("}", r"\}")):
        P.pair_images(tmp_path / "sr", tmp_path / "gt", **kwargs)


def test_size_mismatch_names_both_files(tmp_path):
    _save(tmp_path / "sr", "a.png", (40, 32))
    _save(tmp_path / "gt", "a.png", (32, 32))
    with pytest.raises(P.EvaluationError, match=r"size mismatch: SR .*a\.png is 40x32 but GT .*32x32"):
        M.evaluate_folders(tmp_path / "sr", tmp_path / "gt", metrics=["psnr"], progress=False)


# ----------------------------------------------------------------------------- the protocol


def test_identical_folders_give_ideal_values(tmp_path):
    # Two sizes, so batching has to split; pyiqa's PSNR caps at 10 log10(1 / 1e-8) = 80 dB.
    for i, size in enumerate([(40, 32), (40, 32), (24, 48)]):
        _save(tmp_path / "sr", f"{i}.png", size, seed=i)
        _save(tmp_path / "gt", f"{i}.png", size, seed=i)
    result = M.evaluate_folders(
        tmp_path / "sr", tmp_path / "gt", ["psnr", "ssim"], batch_size=4, progress=False
    )
    assert result.images == ["0.png", "1.png", "2.png"]
    assert result.scores["psnr"] == pytest.approx([80.0] * 3, abs=1e-4)
    assert result.scores["ssim"] == pytest.approx([1.0] * 3, abs=1e-6)


def test_16_bit_ground_truth_is_rescaled_not_clipped(tmp_path):
    """Issue 11, case 3: a 16-bit greyscale GT and its 8-bit copy are the same picture (was 2.49 dB)."""
    levels = (np.arange(48 * 40).reshape(40, 48) * 34 % 65536).astype(np.uint16)
    (tmp_path / "gt").mkdir()
    Image.fromarray(levels).save(tmp_path / "gt" / "a.png")
    assert Image.open(tmp_path / "gt" / "a.png").mode == "I;16"
    eight = np.round(levels / 65535 * 255).astype(np.uint8)
    _save(tmp_path / "sr", "a.png")
    Image.fromarray(eight).save(tmp_path / "sr" / "a.png")
    result = M.evaluate_folders(tmp_path / "sr", tmp_path / "gt", ["psnr", "ssim"], progress=False)
    assert result.scores["psnr"] == pytest.approx([80.0], abs=1e-4)
    assert result.scores["ssim"] == pytest.approx([1.0], abs=1e-6)


def _y_channel(path: Path) -> np.ndarray:
    """BT.601 luma of an RGB image read in [0, 1], on the [16, 235] scale (BasicSR's rgb2ycbcr)."""
    rgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64) / 255.0
    return 16.0 + rgb @ np.array([65.481, 128.553, 24.966])


def _psnr(sr: np.ndarray, gt: np.ndarray) -> float:
    """PSNR of Y in [0, 1] with pyiqa's 1e-8 in the denominator."""
    return float(10 * np.log10(1.0 / (np.mean(((sr - gt) / 255.0) ** 2) + 1e-8)))


def _ssim(sr: np.ndarray, gt: np.ndarray) -> float:
    """SSIM of Y rounded to integers in [0, 255]: 11x11 Gaussian (sigma 1.5), 'valid' windows,
    the contrast-structure term clamped at 0 (pyiqa does; without it this set's mean is 0.0024 lower)."""
    offsets = np.arange(11) - 5.0
    g = np.exp(-(offsets**2) / (2 * 1.5**2))
    g /= g.sum()

    def blur(x: np.ndarray) -> np.ndarray:  # the 2-D Gaussian is separable
        return sliding_window_view(sliding_window_view(x, 11, axis=0) @ g, 11, axis=1) @ g

    x, y = np.round(sr), np.round(gt)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mx, my = blur(x), blur(y)
    vx, vy, cov = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    cs = np.maximum((2 * cov + c2) / (vx + vy + c2), 0)
    return float(np.mean((2 * mx * my + c1) / (mx**2 + my**2 + c1) * cs))


def test_psnr_ssim_match_an_independent_formula_on_realsr_mini(shared_data_dir):
    folder = shared_data_dir / "realsr-mini"
    result = M.evaluate_folders(folder / "osediff", folder / "hr", ["psnr", "ssim"], progress=False)
    assert len(result.images) == 10
    expected = {"psnr": [], "ssim": []}
    for name in result.images:
        sr, gt = _y_channel(folder / "osediff" / name), _y_channel(folder / "hr" / name)
        expected["psnr"].append(_psnr(sr, gt))
        expected["ssim"].append(_ssim(sr, gt))
    for metric in ("psnr", "ssim"):
        assert result.scores[metric] == pytest.approx(expected[metric], abs=1e-3)
        assert result.mean[metric] == pytest.approx(np.mean(expected[metric]), abs=1e-3)
    assert result.mean == pytest.approx({"psnr": 23.6161, "ssim": 0.7360}, abs=1e-4)


def test_directions_come_from_pyiqa():
    directions = {metric: M.lower_better(metric) for metric in M.METRICS}
    assert [metric for metric, lower in directions.items() if lower] == ["lpips", "dists", "fid", "niqe"]


# ----------------------------------------------------------------------------- weights


def test_weight_table_matches_pyiqa_timm_and_torchvision():
    """The file names were read off the libraries' sources; fail loudly if a new version moves them."""
    import pyiqa
    import timm
    import torchvision.models as tvm
    from pyiqa.archs import clip_model

    sources = "".join(p.read_text() for p in (Path(pyiqa.__file__).parent / "archs").glob("*.py"))
    torchvision_urls = {tvm.AlexNet_Weights.IMAGENET1K_V1.url, tvm.VGG16_Weights.IMAGENET1K_V1.url}
    for metric, spec in M.METRICS.items():
        assert spec.pyiqa_name in pyiqa.list_models(), metric
        for weight in spec.weights:
            if weight.store == "pyiqa":
                assert f"'{weight.name}'" in sources, weight
            elif weight.store == "checkpoints":
                assert weight.url in torchvision_urls, weight
            elif weight.store == "clip":
                assert weight.url == clip_model._MODELS["RN50"]
            else:
                arch = {"maniqa": "vit_base_patch8_224", "topiq_nr": "resnet50"}[metric.split("-")[0]]
                assert weight.store == "hf:" + timm.models.get_pretrained_cfg(arch).hf_hub_id


def test_missing_weights_are_reported_with_file_and_folder(tmp_path, no_weights):
    _save(tmp_path / "sr", "a.png")
    _save(tmp_path / "gt", "a.png")
    result = M.evaluate_folders(
        tmp_path / "sr", tmp_path / "gt", ["psnr", "niqe", "topiq_nr"], progress=False
    )
    assert list(result.mean) == ["psnr"]
    folder = tmp_path / "torch" / "hub" / "pyiqa"
    assert f"niqe_modelparameters.mat into {folder}/" in result.unavailable["niqe"]
    reason = result.unavailable["topiq_nr"]
    assert "cfanet_nr_koniq_res50-9a73138b.pth" in reason
    assert (
        f"model.safetensors of Hugging Face repo timm/resnet50.a1_in1k in the Hugging Face cache {tmp_path}"
        in reason
    )
    assert "- niqe unavailable: missing weights: put niqe_modelparameters.mat into" in R.report(result)


def test_weight_files_in_place_count_as_present(no_weights):
    pyiqa_file, hf_file = M.METRICS["topiq_nr"].weights
    assert M.missing_weights("topiq_nr") == [pyiqa_file, hf_file]
    pyiqa_file.folder().mkdir(parents=True)
    (pyiqa_file.folder() / pyiqa_file.name).write_bytes(b"")
    snapshot = hf_file.folder() / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / hf_file.name).write_bytes(b"")
    (hf_file.folder() / "refs").mkdir()
    (hf_file.folder() / "refs" / "main").write_text("abc123")
    assert M.missing_weights("topiq_nr") == []


# ----------------------------------------------------------------------------- metric selection


def test_metric_selection():
    assert M.select_metrics(None, has_gt=False) == ["niqe", "musiq", "maniqa-pipal", "clipiqa", "topiq_nr"]
    assert M.select_metrics(None, has_gt=True) == list(M.DEFAULT_METRICS)
    with pytest.raises(P.EvaluationError, match="unknown metric.*psnr_y; choose from psnr, ssim"):
        M.select_metrics(["psnr_y"], has_gt=True)
    with pytest.raises(P.EvaluationError, match="psnr, fid need.*pass --gt DIR"):
        M.select_metrics(["psnr", "fid", "niqe"], has_gt=False)


def test_fid_compares_only_the_paired_files(tmp_path):
    pairs = [(_save(tmp_path / "sr", f"{i}.PNG"), _save(tmp_path / "gt", f"{i}.jpg")) for i in range(3)]
    _save(tmp_path / "sr", "unpaired.png")
    seen = {}

    def fake_fid(sr_dir: str, gt_dir: str, **kwargs) -> float:
        seen.update(sr=sorted(os.listdir(sr_dir)), gt=sorted(os.listdir(gt_dir)), **kwargs)
        return 1.5

    assert M.folder_fid(fake_fid, pairs, batch_size=2) == 1.5
    assert seen["sr"] == ["000000.png", "000001.png", "000002.png"]
    assert seen["gt"] == ["000000.png", "000001.png", "000002.png"]  # decoded by pure.images, as PNG
    assert seen["batch_size"] == 2


# ----------------------------------------------------------------------------- outputs


def _evaluation() -> M.Evaluation:
    return M.Evaluation(
        name="run",
        metrics=["psnr", "ssim", "lpips"],
        images=["a.png", "b.png"],
        scores={"psnr": [20.0, 30.0], "ssim": [0.5, 0.7]},
        mean={"psnr": 25.0, "ssim": 0.6},
        unavailable={"lpips": "missing weights: put X into Y"},
        missing=["c.png"],
    )


def test_json_csv_and_table(tmp_path):
    evaluation = _evaluation()
    R.write_json(evaluation, tmp_path / "out" / "metrics.json", {"sr": "sr"})
    R.write_csv(evaluation, tmp_path / "out" / "per_image.csv")
    data = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert data["mean"] == {"psnr": 25.0, "ssim": 0.6} and data["count"] == 2 and data["sr"] == "sr"
    assert data["lower_better"] == {"psnr": False, "ssim": False}
    assert data["unavailable"] == {"lpips": "missing weights: put X into Y"}
    assert (tmp_path / "out" / "per_image.csv").read_text().splitlines() == [
        "image,psnr,ssim",
        "a.png,20.000000,0.500000",
        "b.png,30.000000,0.700000",
    ]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["metrics.json", "per_image.csv"]
    table = R.report(evaluation, [R.Row("paper", {"psnr": 24.0, "niqe": 5.0})]).splitlines()
    assert table[:4] == [
        "| method | images | PSNR ↑ | SSIM ↑ | LPIPS ↓ | NIQE ↓ |",
        "|---|---|---|---|---|---|",
        "| run | 2 | 25.0000 | 0.6000 | – | – |",
        "| paper | – | 24.0000 | – | – | 5.0000 |",
    ]
    assert table[4:] == [
        "- lpips unavailable: missing weights: put X into Y",
        "- 1 GT image(s) without an SR image: c.png",
    ]


def test_compare_files(tmp_path):
    published = R.load_rows(ROOT / "data" / "published" / "pure_x4.json")
    assert [row.name for row in published] == ["PURE (published, RealSR)", "PURE (published, DRealSR)"]
    assert published[0].mean["psnr"] == 22.83 and published[1].mean["clipiqa"] == 0.7259
    R.write_json(_evaluation(), tmp_path / "metrics.json")
    assert R.load_rows(tmp_path / "metrics.json") == [R.Row("run", {"psnr": 25.0, "ssim": 0.6}, 2)]
    (tmp_path / "table.csv").write_text("name,count,PSNR,niqe\nother,100,24.5,\n")
    assert R.load_rows(tmp_path / "table.csv") == [R.Row("other", {"psnr": 24.5}, 100)]
    (tmp_path / "bad.json").write_text('{"rows": [{"name": "x", "mean": {"sharpness": 1}}]}')
    with pytest.raises(P.EvaluationError, match=r"bad\.json: unknown metric\(s\) sharpness"):
        R.load_rows(tmp_path / "bad.json")
    (tmp_path / "bad.csv").write_text("method,psnr\nx,1\n")
    with pytest.raises(P.EvaluationError, match=r"cannot read results from .*bad\.csv"):
        R.load_rows(tmp_path / "bad.csv")


# ----------------------------------------------------------------------------- command lines


def test_evaluate_command(tmp_path, capsys, no_weights):
    for i in range(2):
        _save(tmp_path / "sr", f"{i}.png", seed=i)
        _save(tmp_path / "gt", f"{i}.png", seed=i + 10)
    argv = [
        "--sr",
        str(tmp_path / "sr"),
        "--gt",
        str(tmp_path / "gt"),
        "--metrics",
        "psnr,ssim",
        "--metrics",
        "lpips",
    ]
    argv += ["--json", str(tmp_path / "m.json"), "--csv", str(tmp_path / "p.csv"), "--no-progress"]
    assert evaluate_main(argv) == 0
    out, err = capsys.readouterr()
    assert out.startswith(
        "| method | images | PSNR ↑ | SSIM ↑ | LPIPS ↓ |\n|---|---|---|---|---|\n| sr | 2 |"
    )
    assert "lpips unavailable: missing weights: put LPIPS_v0.1_alex-df73285e.pth into" in out
    assert json.loads((tmp_path / "m.json").read_text())["count"] == 2
    assert (
        evaluate_main(["--sr", str(tmp_path / "sr"), "--metrics", "lpips", "--json", str(tmp_path / "x")])
        == 2
    )
    assert "lpips need(s) ground truth" in capsys.readouterr().err
    assert (
        evaluate_main(
            [
                "--sr",
                str(tmp_path / "sr"),
                "--metrics",
                "niqe",
                "--no-progress",
                "--json",
                str(tmp_path / "n.json"),
                "--csv",
                str(tmp_path / "n.csv"),
            ]
        )
        == 1
    )
    assert "no metric could run" in capsys.readouterr().err
    blocked = ["--json", str(tmp_path / "m.json" / "x.json"), "--metrics", "psnr", "--no-progress"]
    assert evaluate_main(["--sr", str(tmp_path / "sr"), "--gt", str(tmp_path / "gt"), *blocked]) == 1
    assert "cannot write results" in capsys.readouterr().err


def test_evaluate_script_fails_with_a_clear_error(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    script = [sys.executable, str(ROOT / "scripts" / "evaluate.py")]
    result = subprocess.run(
        [*script, "--sr", str(tmp_path / "none")], capture_output=True, text=True, env=env
    )
    assert result.returncode == 2
    assert f"error: SR folder not found: {tmp_path / 'none'}" in result.stderr


def test_benchmark_paths(tmp_path):
    with pytest.raises(P.EvaluationError, match=r"benchmark 'realsr' needs .*realsr/lr/"):
        B.benchmark_paths("realsr", tmp_path)
    (tmp_path / "realsr" / "lr").mkdir(parents=True)
    (tmp_path / "realsr" / "hr").mkdir()
    paths = B.benchmark_paths("realsr", tmp_path, tmp_path / "run")
    assert paths["sr"] == tmp_path / "run" / "sr" and paths["json"] == tmp_path / "run" / "metrics.json"
    assert B.benchmark_paths("realsr", tmp_path)["run"].parent == Path("runs") / "realsr"


def test_benchmark_command_passes_unknown_arguments_to_inference(monkeypatch, tmp_path):
    calls = []

    def fake_run_inference(args):
        calls.append((args.input, args.output, args.config, args.overrides))
        return 0

    monkeypatch.setattr(pure.cli, "run_inference", fake_run_inference)
    for sub in ("lr", "hr"):
        _save(tmp_path / "realsr" / sub, "a.png", (8, 8), seed=0)
    run = tmp_path / "run"
    (run / "sr").mkdir(parents=True)
    shutil.copy(tmp_path / "realsr" / "hr" / "a.png", run / "sr" / "a.png")
    argv = ["realsr", "--root", str(tmp_path), "--config", "c.yaml", "--metrics", "psnr", "sampling.top_k=1"]
    assert benchmark_main([*argv, "--run", str(run), "--no-progress"]) == 0
    lr = str(tmp_path / "realsr" / "lr")
    assert calls == [(lr, str(run / "sr"), "c.yaml", ["sampling.top_k=1"])]


def test_benchmark_chains_inference_and_evaluation(tmp_path):
    """With a stand-in for inference (a bicubic x4 upscale) so no model is needed."""
    for i in range(2):
        _save(tmp_path / "sets" / "tiny" / "lr", f"{i}.png", (12, 10), seed=i)
        _save(tmp_path / "sets" / "tiny" / "hr", f"{i}.png", (48, 40), seed=i)

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
    with pytest.raises(P.EvaluationError, match=r"failed \(exit 1\)"):
        B.run_benchmark("tiny", tmp_path / "sets", tmp_path / "run2", lambda lr, sr: 1, metrics=["psnr"])
