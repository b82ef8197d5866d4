"""Metrics (pure/metrics.py): the PSNR/SSIM protocol against an independent numpy formula, offline
weight detection, metric selection, FID, and scripts/evaluate.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image

from pure import metrics as M
from pure import pairing as P
from pure import reports as R
from pure.cli import evaluate_main
from tests.fakes import random_image

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may wait on the network
ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- the protocol


def test_identical_folders_give_ideal_values(tmp_path):
    # Two sizes, so batching has to split; pyiqa's PSNR caps at 10 log10(1 / 1e-8) = 80 dB.
    for i, size in enumerate([(40, 32), (40, 32), (24, 48)]):
        random_image(tmp_path / "sr", f"{i}.png", size, seed=i)
        random_image(tmp_path / "gt", f"{i}.png", size, seed=i)
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
    random_image(tmp_path / "sr", "a.png")
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


@pytest.mark.slow
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


def test_crop_border_matches_basicsr(shared_data_dir, tmp_path, capsys):
    """--crop-border 4 cuts 4 px off each side of both images, as basicsr's crop_border: PSNR equals
    basicsr's calculate_psnr(crop_border=4, test_y_channel=True) on real crops, SSIM the independent
    formula on the cropped Y; the JSON records the crop; a crop that leaves nothing is one line."""
    from basicsr.metrics import calculate_psnr

    folder = shared_data_dir / "realsr-mini"
    for side in ("sr", "gt"):
        (tmp_path / side).mkdir()
    names = sorted(p.name for p in (folder / "hr").glob("*.png"))[:2]
    for name in names:  # 64x48 crops keep the test fast
        Image.open(folder / "osediff" / name).crop((8, 8, 72, 56)).save(tmp_path / "sr" / name)
        Image.open(folder / "hr" / name).crop((8, 8, 72, 56)).save(tmp_path / "gt" / name)
    sr_dir, gt_dir = tmp_path / "sr", tmp_path / "gt"
    result = M.evaluate_folders(sr_dir, gt_dir, ["psnr", "ssim"], progress=False, crop_border=4)
    for i, name in enumerate(result.images):
        sr = np.asarray(Image.open(sr_dir / name).convert("RGB"))[:, :, ::-1]  # basicsr reads BGR
        gt = np.asarray(Image.open(gt_dir / name).convert("RGB"))[:, :, ::-1]
        expected = calculate_psnr(sr.astype(np.float64), gt.astype(np.float64), 4, test_y_channel=True)
        assert result.scores["psnr"][i] == pytest.approx(expected, abs=1e-4)
        y_sr, y_gt = _y_channel(sr_dir / name), _y_channel(gt_dir / name)
        assert result.scores["ssim"][i] == pytest.approx(_ssim(y_sr[4:-4, 4:-4], y_gt[4:-4, 4:-4]), abs=1e-3)
    uncropped = M.evaluate_folders(sr_dir, gt_dir, ["psnr"], progress=False)
    assert uncropped.scores["psnr"] != pytest.approx(result.scores["psnr"], abs=1e-3)
    assert result.as_dict()["crop_border"] == 4 and "4 px cut off each side" in result.as_dict()["protocol"]
    flags = ["--sr", str(sr_dir), "--gt", str(gt_dir), "--metrics", "psnr", "--crop-border", "24"]
    code = evaluate_main(flags)
    err = capsys.readouterr().err
    assert code == 2 and "--crop-border 24 cuts all of" in err and "64x48 px" in err
    assert len(err.strip().splitlines()) == 1


def test_the_readers_notes_on_scored_files_are_reported(tmp_path, capsys):
    """A GT whose embedded colour profile cannot be applied is read as sRGB, as inference reads it; the
    report and the JSON say so, naming the file (evaluate printed nothing)."""
    for side in ("sr", "gt"):
        (tmp_path / side).mkdir()
        Image.new("RGB", (16, 16), "gray").save(tmp_path / side / "a.png")
    Image.new("RGB", (16, 16), "gray").save(tmp_path / "gt" / "a.png", icc_profile=b"damaged profile")
    result = M.evaluate_folders(tmp_path / "sr", tmp_path / "gt", ["psnr"], progress=False)
    assert len(result.notes) == 1 and str(tmp_path / "gt" / "a.png") in result.notes[0]
    assert "embedded ICC profile ignored" in result.notes[0] and result.as_dict()["notes"] == result.notes
    assert f"- note: {result.notes[0]}" in R.report(result).splitlines()


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
    random_image(tmp_path / "sr", "a.png")
    random_image(tmp_path / "gt", "a.png")
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


def test_a_damaged_weight_file_is_named_with_where_to_get_it(tmp_path, no_weights, monkeypatch):
    """An interrupted download leaves a file that is present but unreadable: pyiqa's error alone
    ("MatReadError: Mat file appears to be truncated") named neither the file nor the fix."""
    import pyiqa.utils.download_util

    weight = M.METRICS["niqe"].weights[0]
    weight.folder().mkdir(parents=True)
    (weight.folder() / weight.name).write_bytes(b"MATLAB 5.0 MAT-file, cut short")
    monkeypatch.setattr(pyiqa.utils.download_util, "DEFAULT_CACHE_DIR", str(weight.folder()))
    _, unavailable = M.create_metrics(["niqe"], "cpu")
    assert unavailable["niqe"].startswith("pyiqa could not create it: ")
    assert unavailable["niqe"].endswith(
        "; if a file it loads is damaged (an interrupted download?), put it there again: "
        f"niqe_modelparameters.mat into {weight.folder()}/ (from {weight.url})"
    )
    assert "\n" not in unavailable["niqe"]


def test_a_failed_download_names_the_files_to_fetch(no_weights, monkeypatch):
    """With --download and no network, pyiqa's URLError alone named neither the file nor where it goes."""
    import urllib.error

    import pyiqa.utils.download_util

    weight = M.METRICS["niqe"].weights[0]
    monkeypatch.setattr(pyiqa.utils.download_util, "DEFAULT_CACHE_DIR", str(weight.folder()))

    def offline(url, dst, *args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(pyiqa.utils.download_util, "download_url_to_file", offline)
    _, unavailable = M.create_metrics(["niqe"], "cpu", download=True)
    assert unavailable["niqe"].startswith("pyiqa could not create it: URLError")
    assert unavailable["niqe"].endswith(
        f"; if the download failed (no network?), put niqe_modelparameters.mat into {weight.folder()}/ "
        f"(from {weight.url})"
    )
    assert "\n" not in unavailable["niqe"]


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
    with pytest.raises(P.EvaluationError, match=r"metric.*psnr_y \(did you mean psnr\?\); choose from"):
        M.select_metrics(["psnr_y"], has_gt=True)
    with pytest.raises(P.EvaluationError, match="psnr, fid need.*pass --gt DIR"):
        M.select_metrics(["psnr", "fid", "niqe"], has_gt=False)


def test_metric_names_are_taken_in_any_case(tmp_path, capsys):
    """``--metrics PSNR,SSIM`` (as papers write them) was refused with "did you mean psnr, ssim?"."""
    assert M.select_metrics(["PSNR", "Ssim", "psnr"], has_gt=True) == ["psnr", "ssim"]
    random_image(tmp_path / "sr", "a.png", (16, 16))
    random_image(tmp_path / "gt", "a.png", (16, 16))
    out = ["--json", str(tmp_path / "m.json"), "--csv", str(tmp_path / "p.csv"), "--no-progress"]
    folders = ["--sr", str(tmp_path / "sr"), "--gt", str(tmp_path / "gt")]
    assert evaluate_main([*folders, "--metrics", "PSNR", *out]) == 0
    assert json.loads((tmp_path / "m.json").read_text())["mean"]["psnr"] == pytest.approx(80.0, abs=1e-4)
    assert evaluate_main(["--sr", str(tmp_path / "sr"), "--metrics", "ALL", *out]) == 2  # all: FID needs --gt
    assert "need(s) ground truth" in capsys.readouterr().err


def test_fid_compares_only_the_paired_files(tmp_path):
    sr, gt = tmp_path / "sr", tmp_path / "gt"
    pairs = [(random_image(sr, f"{i}.PNG"), random_image(gt, f"{i}.jpg")) for i in range(3)]
    random_image(tmp_path / "sr", "unpaired.png")
    seen = {}

    def fake_fid(sr_dir: str, gt_dir: str, **kwargs) -> float:
        seen.update(sr=sorted(os.listdir(sr_dir)), gt=sorted(os.listdir(gt_dir)), **kwargs)
        return 1.5

    assert M.folder_fid(fake_fid, pairs, batch_size=2) == 1.5
    assert seen["sr"] == ["000000.png", "000001.png", "000002.png"]
    assert seen["gt"] == ["000000.png", "000001.png", "000002.png"]  # decoded by pure.images, as PNG
    assert seen["batch_size"] == 2


def test_fid_alone_compares_sets_of_other_sizes(tmp_path, monkeypatch):
    """Only per-image metrics need an SR image of its GT's size; clean-fid resizes every image."""
    for name in ("a.png", "b.png"):
        random_image(tmp_path / "sr", name, (64, 64))
        random_image(tmp_path / "gt", name, (32, 32))
    fake_fid = {"fid": lambda sr_dir, gt_dir, **kwargs: 1.5}
    monkeypatch.setattr(M, "create_metrics", lambda names, device, download: (fake_fid, {}))
    evaluation = M.evaluate_folders(tmp_path / "sr", tmp_path / "gt", metrics=["fid"], progress=False)
    assert evaluation.mean == {"fid": 1.5}


# ----------------------------------------------------------------------------- command lines


def test_evaluate_command(tmp_path, capsys, no_weights):
    for i in range(2):
        random_image(tmp_path / "sr", f"{i}.png", seed=i)
        random_image(tmp_path / "gt", f"{i}.png", seed=i + 10)
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
    assert evaluate_main(argv) == 1  # lpips was asked for by name and could not run: the others are written
    out, err = capsys.readouterr()
    assert "asked for but not run: lpips" in err
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
    assert evaluate_main(["--sr", str(tmp_path / "sr"), "--gt", str(tmp_path / "gt"), *blocked]) == 2
    assert "x.json cannot be written (" in capsys.readouterr().err  # before scoring


@pytest.mark.slow
def test_evaluate_script_fails_with_a_clear_error(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    script = [sys.executable, str(ROOT / "scripts" / "evaluate.py")]
    result = subprocess.run(
        [*script, "--sr", str(tmp_path / "none")], capture_output=True, text=True, env=env
    )
    assert result.returncode == 2
    assert f"error: SR folder not found: {tmp_path / 'none'}" in result.stderr


def test_ssim_on_an_image_smaller_than_its_window_is_one_line(tmp_path):
    for folder in ("sr", "gt"):
        (tmp_path / folder).mkdir()
        Image.new("RGB", (8, 8), (90, 90, 90)).save(tmp_path / folder / "tiny.png")
    with pytest.raises(P.EvaluationError, match=r"tiny.png: 8x8 px is smaller than SSIM's 11 px window"):
        M.evaluate_folders(tmp_path / "sr", tmp_path / "gt", metrics=["psnr", "ssim"], progress=False)
    evaluation = M.evaluate_folders(tmp_path / "sr", tmp_path / "gt", progress=False)  # the default list:
    assert "psnr" in evaluation.mean and "ssim" not in evaluation.mean  # SSIM skipped, PSNR scored
    assert "smaller than SSIM's 11 px window" in evaluation.unavailable["ssim"]


@pytest.fixture
def niqe_weights(no_weights, monkeypatch):
    """NIQE's pristine model (``niqe_modelparameters.mat``), from basicsr's copy of the same numbers."""
    import basicsr.metrics
    import scipy.io

    params = np.load(Path(basicsr.metrics.__file__).parent / "niqe_pris_params.npz")
    weight = M.METRICS["niqe"].weights[0]
    weight.folder().mkdir(parents=True)
    mat = {"mu_prisparam": params["mu_pris_param"].reshape(1, -1), "cov_prisparam": params["cov_pris_param"]}
    scipy.io.savemat(weight.folder() / weight.name, mat)
    import pyiqa.utils.download_util  # its folder was fixed when pyiqa was first imported

    monkeypatch.setattr(pyiqa.utils.download_util, "DEFAULT_CACHE_DIR", str(weight.folder()))
    return no_weights


def test_niqe_on_an_image_under_its_block_is_one_line(tmp_path, niqe_weights):
    """pyiqa's NIQE needs a 96 px block on each side; a smaller image was a RuntimeError traceback."""
    random_image(tmp_path / "sr", "a.png", (128, 128))
    random_image(tmp_path / "sr", "small.png", (120, 40))
    with pytest.raises(P.EvaluationError, match=r"small.png: 120x40 px is smaller than NIQE's 96 px block"):
        M.evaluate_folders(tmp_path / "sr", metrics=["niqe"], progress=False)
    evaluation = M.evaluate_folders(tmp_path / "sr", progress=False)  # the default list: NIQE skipped
    assert "smaller than NIQE's 96 px block" in evaluation.unavailable["niqe"]


@pytest.mark.filterwarnings("ignore:cov\\(\\)")
def test_a_metric_failing_on_an_image_is_one_line_naming_it(tmp_path, niqe_weights, capsys):
    """pyiqa's NIQE fails on a constant image (LinAlgError); that metric is dropped, naming the image, not the
    run with a traceback; a NaN score is dropped the same way (it would make the mean and the JSON NaN)."""
    random_image(tmp_path / "sr", "a.png", (128, 128))
    Image.new("RGB", (128, 128), (0, 0, 0)).save(tmp_path / "sr" / "black.png")
    out = ["--json", str(tmp_path / "m.json"), "--csv", str(tmp_path / "p.csv")]
    argv = ["--sr", str(tmp_path / "sr"), "--metrics", "niqe", "--batch-size", "2", "--no-progress", *out]
    assert evaluate_main(argv) == 1
    err = capsys.readouterr()
    assert f"- niqe unavailable: pyiqa failed on {tmp_path / 'sr' / 'black.png'} (" in err.out
    assert "no metric could run" in err.err and not (tmp_path / "m.json").exists()

    class NaNForSecond(torch.nn.Module):
        def forward(self, sr, gt=None):
            return torch.tensor([1.0, float("nan")][: sr.shape[0]])

    pairs = [(tmp_path / "sr" / "a.png", None), (tmp_path / "sr" / "b.png", None)]
    scores = M._score("niqe", NaNForSecond(), torch.zeros(2, 3, 8, 8), None, [p for p, _ in pairs])
    assert scores[1] == f"pyiqa gave nan for {tmp_path / 'sr' / 'b.png'}"

    class OutOfMemoryOnBatches(torch.nn.Module):
        def forward(self, sr, gt=None):
            if sr.shape[0] > 1:
                raise RuntimeError("CUDA out of memory.\nTried to allocate 2 GiB")
            return sr.mean((1, 2, 3))

    sr = torch.stack([torch.full((3, 8, 8), 0.25), torch.full((3, 8, 8), 0.5)])
    paths = [p for p, _ in pairs]
    assert M._score("niqe", OutOfMemoryOnBatches(), sr, None, paths) == ([0.25, 0.5], None)  # not a.png's


def test_json_and_csv_on_one_path_are_refused_before_scoring(tmp_path, capsys):
    for folder in ("sr", "gt"):
        (tmp_path / folder).mkdir()
        Image.new("RGB", (16, 16), (90, 90, 90)).save(tmp_path / folder / "a.png")
    same = str(tmp_path / "m.json")
    argv = ["--sr", str(tmp_path / "sr"), "--gt", str(tmp_path / "gt"), "--metrics", "psnr", "--no-progress"]
    assert evaluate_main([*argv, "--json", same, "--csv", same]) == 2
    assert "the same file" in capsys.readouterr().err and not (tmp_path / "m.json").exists()
    image = tmp_path / "sr" / "a.png"
    assert evaluate_main([*argv, "--json", str(image)]) == 2  # never a table written over a scored image
    assert f"--json {image} names an image file; pass a .json file name" in capsys.readouterr().err
    assert Image.open(image).size == (16, 16)


def test_a_metric_asked_for_by_name_that_cannot_run_fails_the_run(tmp_path, capsys, monkeypatch):
    for folder in ("sr", "gt"):
        (tmp_path / folder).mkdir()
        Image.new("RGB", (16, 16), (90, 90, 90)).save(tmp_path / folder / "a.png")
    real = M.create_metrics

    def without_lpips(names, device, download):
        models, unavailable = real([n for n in names if n != "lpips"], device, download)
        return models, {**unavailable, "lpips": "missing weights (a stand-in)"}

    monkeypatch.setattr(M, "create_metrics", without_lpips)
    argv = ["--sr", str(tmp_path / "sr"), "--gt", str(tmp_path / "gt"), "--no-progress"]
    out = ["--json", str(tmp_path / "m.json"), "--csv", str(tmp_path / "p.csv")]
    assert evaluate_main([*argv, *out, "--metrics", "psnr,lpips"]) == 1
    assert "asked for but not run: lpips" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["{stem}_{x}", "{stem}{0}", "{stem}_{"])
def test_an_sr_name_with_other_braces_is_one_line(tmp_path, name):
    with pytest.raises(P.EvaluationError, match=r"only \{stem\} may stand in braces"):
        P.pair_images(tmp_path, tmp_path, name)


def test_an_empty_metrics_flag_is_a_usage_error(tmp_path, capsys):
    for folder in ("sr", "gt"):
        (tmp_path / folder).mkdir()
        Image.new("RGB", (16, 16)).save(tmp_path / folder / "a.png")
    argv = ["--sr", str(tmp_path / "sr"), "--gt", str(tmp_path / "gt"), "--no-progress", "--metrics="]
    assert evaluate_main(argv) == 2
    assert capsys.readouterr().err.startswith("error: --metrics names no metric; pass some of psnr")
    assert not (tmp_path / "runs").exists()


def test_results_that_cannot_be_written_are_refused_before_scoring(tmp_path, capsys):
    """--csv in a folder that cannot be made: one line before any scoring, and no --json written alone."""
    for folder in ("sr", "gt"):
        (tmp_path / folder).mkdir()
        Image.new("RGB", (16, 16)).save(tmp_path / folder / "a.png")
    (tmp_path / "file").write_text("x")
    argv = ["--sr", str(tmp_path / "sr"), "--gt", str(tmp_path / "gt"), "--no-progress", "--metrics", "psnr"]
    csv_path = tmp_path / "file" / "t.csv"
    assert evaluate_main([*argv, "--json", str(tmp_path / "m.json"), "--csv", str(csv_path)]) == 2
    assert capsys.readouterr().err.startswith(f"error: --csv {csv_path} cannot be written (")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "gt", "sr"]


def test_an_sr_folder_given_as_dot_is_named_by_its_own_name(tmp_path, monkeypatch, capsys):
    random_image(tmp_path / "restored", "0.png", seed=0)
    random_image(tmp_path / "gt", "0.png", seed=1)
    monkeypatch.chdir(tmp_path / "restored")
    assert evaluate_main(["--sr", ".", "--gt", "../gt", "--metrics", "psnr", "--no-progress"]) == 0
    out, err = capsys.readouterr()
    assert "restored" in out and "replacing" not in err  # the table's row; a first run
    assert evaluate_main(["--sr", ".", "--gt", "../gt", "--metrics", "psnr", "--no-progress"]) == 0
    assert "(replacing earlier results there)" in capsys.readouterr().err  # never silently
    written = json.loads((tmp_path / "restored" / "runs" / "eval" / "restored" / "metrics.json").read_text())
    assert written["name"] == "restored"
    assert M.folder_name("/") == "root" and M.folder_name(tmp_path / "gt" / "..") == tmp_path.name


def test_a_run_name_is_a_plain_name_and_escaped_in_the_table(tmp_path, monkeypatch, capsys):
    random_image(tmp_path / "sr", "0.png", seed=0)
    random_image(tmp_path / "gt", "0.png", seed=1)
    monkeypatch.chdir(tmp_path)
    argv = ["--sr", "sr", "--gt", "gt", "--metrics", "psnr", "--no-progress"]
    for name in ("/abs", "../up", ".."):  # runs/eval/NAME must stay under runs/eval
        assert evaluate_main([*argv, "--name", name]) == 2
        assert "is a row name and the folder runs/eval/NAME: give a plain name" in capsys.readouterr().err
    assert evaluate_main([*argv, "--name", "a|b"]) == 0
    assert "| a\\|b | 1 |" in capsys.readouterr().out  # one cell, not two
    assert (
        evaluate_main([*argv, "--name", "x/y", "--json", "m.json", "--csv", "m.csv"]) == 0
    )  # no folder made
