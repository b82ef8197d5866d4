"""scripts/infer.py end to end on real images with the tiny model: sizes, sidecars, bad files, exit codes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pure.cli import infer_main
from pure.config import InferConfig, load_config
from pure.errors import PureError
from pure.images import read_image
from pure.pairing import list_images
from pure.pipeline import Restorer, split_text
from tests.fakes import BlockVQ

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "--config",
    str(ROOT / "configs" / "tiny.yaml"),
    "--no-progress",
    "restore.tile=64",
    "restore.tile_overlap=16",
    "restore.batch_size=8",
]


def _expected_size(path: Path, scale: float) -> tuple[int, int]:
    image = read_image(path).rgb
    return max(1, round(image.width * scale)), max(1, round(image.height * scale))


def test_sigterm_stops_a_run_as_ctrl_c_does(tmp_path, monkeypatch, capsys):
    """kill / docker stop / a scheduler's preemption: the interrupted summary and cleanup of Ctrl-C, exit
    143; the handler is removed again afterwards."""
    import os
    import signal

    import pure.infer

    before = signal.getsignal(signal.SIGTERM)
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("a.png", "b.png"):
        Image.new("RGB", (16, 16), "gray").save(inputs / name)

    def killed(*args):
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("SIGTERM did not stop the run")

    monkeypatch.setattr(pure.infer, "_restore_one", killed)
    assert infer_main(["-i", str(inputs), "-o", str(tmp_path / "out"), *TINY]) == 143
    err = capsys.readouterr().err
    assert "interrupted: 0 of 2 images restored; run the same command with --skip-existing" in err
    assert not (tmp_path / "out").exists()  # created by the run, nothing written: removed
    assert signal.getsignal(signal.SIGTERM) == before


def test_a_full_disk_stops_the_run_at_the_first_image(tmp_path, monkeypatch, capsys):
    """Every later image would fail at its write too: the run stops with one line saying how to go on."""
    import errno

    import pure.infer

    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        Image.new("RGB", (16, 16), "gray").save(inputs / name)

    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pure.infer, "save_outputs", full)
    assert infer_main(["-i", str(inputs), "-o", str(tmp_path / "out"), *TINY]) == 1
    captured = capsys.readouterr()
    assert len(err_lines(captured.err, "failed:")) == 1
    assert (
        "stopped: no space left on the device of" in captured.err
        and "(2 image(s) not started)" in captured.err
    )
    assert "0 restored, 0 skipped (output exists), 1 failed; nothing written" in captured.out


def test_a_profile_that_cannot_be_applied_is_ignored_with_a_note(tmp_path, capsys):
    """Browsers ignore an embedded ICC profile they cannot apply; so does a run, saying so for that file."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.new("RGB", (16, 16), "gray").save(inputs / "a.png", icc_profile=b"damaged profile")
    assert infer_main(["-i", str(inputs), "-o", str(tmp_path / "out"), *TINY]) == 0
    err = capsys.readouterr().err
    assert f"note: {inputs / 'a.png'}: embedded ICC profile ignored (it cannot be applied: " in err
    sidecar = json.loads((tmp_path / "out" / "a.json").read_text())
    assert sidecar["color_profile"] is None and "ICC profile ignored" in sidecar["read"]["steps"][0]


@pytest.mark.slow
def test_edge_cases_folder_end_to_end(shared_data_dir, tmp_path, capsys):
    inputs = tmp_path / "in"
    shutil.copytree(shared_data_dir / "real-lq" / "edge-cases", inputs)
    (inputs / "notes.txt").write_text("not an image")
    (inputs / "broken.jpg").write_bytes((inputs / "0014.jpg").read_bytes()[:400])
    out = tmp_path / "out"
    scale = 0.125
    code = infer_main(["-i", str(inputs), "-o", str(out), "--outscale", str(scale), *TINY])
    assert code == 1  # broken.jpg failed; notes.txt is not an image, so it is skipped, not failed
    captured = capsys.readouterr()
    assert "skipped 1 file(s) that are not images" in captured.err and "notes.txt" in captured.err
    assert err_lines(captured.err, "failed:") == [f"failed: {inputs / 'broken.jpg'}: not a readable image"]
    assert "9 restored, 0 skipped (output exists), 1 failed, 1 non-image file(s) ignored" in captured.out
    good = [p for p in sorted(inputs.iterdir()) if p.name not in ("notes.txt", "broken.jpg")]
    for source in good:
        ext = ".jpg" if source.suffix == ".jpg" else ".png"
        target = out / f"{source.stem}{ext}"
        assert target.is_file(), target
        assert Image.open(target).size == _expected_size(source, scale)
        sidecar = json.loads(target.with_suffix(".json").read_text())
        assert {"degradation", "description", "seed", "settings", "model", "timings_s"} <= set(sidecar)
        assert sidecar["settings"]["restore"]["outscale"] == scale
    assert Image.open(out / "children-alpha.png").mode == "RGBA"
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left behind

    # existing outputs are never silently overwritten: refused before the models load
    code = infer_main(["-i", str(good[0]), "-o", str(out), "--outscale", str(scale), *TINY])
    assert code == 2 and "--overwrite" in capsys.readouterr().err
    assert (
        infer_main(["-i", str(good[0]), "-o", str(out), "--outscale", str(scale), "--skip-existing", *TINY])
        == 0
    )
    assert (
        infer_main(["-i", str(good[0]), "-o", str(out), "--outscale", str(scale), "--overwrite", *TINY]) == 0
    )


def err_lines(text: str, start: str) -> list[str]:
    """The lines of ``text`` that begin with ``start``, cut before any parenthesised detail."""
    return [line.split(" (")[0] for line in text.splitlines() if line.startswith(start)]


@pytest.mark.slow
def test_realsrset_images_at_4x(shared_data_dir, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("chip.png", "comic1.png"):
        image = Image.open(shared_data_dir / "real-lq" / "realsrset" / name)
        image.crop((0, 0, 24, 20)).save(inputs / name)  # small crops keep the CPU test short
    out = tmp_path / "out"
    assert infer_main(["-i", str(inputs), "-o", str(out), "--save-entropy-map", *TINY]) == 0
    for name in ("chip", "comic1"):
        assert Image.open(out / f"{name}.png").size == (96, 80)
        heat = Image.open(out / "entropy" / f"{name}.png")
        assert heat.size == (96, 80) and np.asarray(heat).max() > 0
        sidecar = json.loads((out / f"{name}.json").read_text())
        assert sidecar["entropy_map"] == str(out / "entropy" / f"{name}.png")
    # the maps stay out of the image set: evaluation scores the two restorations only (issue 12, item 6)
    assert sorted(list_images(out, "SR").images) == ["chip", "comic1"]


@pytest.mark.slow
def test_inputs_users_have(tmp_path):
    base = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 30, 3), dtype=np.uint8))
    base.convert("CMYK").save(tmp_path / "cmyk.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees: the photo is 40 wide, 30 high once upright
    base.save(tmp_path / "rotated.jpg", exif=exif)
    Image.fromarray((np.arange(400).reshape(20, 20) * 150).astype(np.uint16)).save(tmp_path / "deep.png")
    base.resize((8, 8)).save(tmp_path / "tiny.png")
    Image.new("RGB", (4000, 48), (120, 80, 40)).save(tmp_path / "wide.png")

    read = read_image(tmp_path / "cmyk.jpg")
    assert read.rgb.mode == "RGB" and read.alpha is None
    assert read_image(tmp_path / "rotated.jpg").rgb.size == (40, 30)
    deep = read_image(tmp_path / "deep.png").rgb
    expected = np.round(np.arange(400).reshape(20, 20) * 150 / 65535 * 255).astype(np.uint8)
    assert deep.mode == "RGB" and np.array_equal(np.asarray(deep)[..., 0], expected)

    out = tmp_path / "out"
    assert infer_main(["-i", str(tmp_path / "tiny.png"), "-o", str(out), *TINY]) == 0
    assert Image.open(out / "tiny.png").size == (32, 32)
    assert infer_main(["-i", str(tmp_path / "wide.png"), "-o", str(out), "--outscale", "0.02", *TINY]) == 0
    assert Image.open(out / "wide.png").size == (80, 1)


def test_overwriting_in_the_other_format_leaves_one_image_per_sidecar(tmp_path):
    """--ext jpg --overwrite after a PNG run: the earlier PNG (pure's, marked) goes once the JPEG is whole;
    a PNG of the user's own (no mark) beside it stays."""
    Image.new("RGB", (8, 8), (120, 80, 40)).save(tmp_path / "a.png")
    out = tmp_path / "out"
    assert infer_main(["-i", str(tmp_path / "a.png"), "-o", str(out), "--ext", "png", *TINY]) == 0
    assert (
        infer_main(["-i", str(tmp_path / "a.png"), "-o", str(out), "--ext", "jpg", "--skip-existing", *TINY])
        == 0
    )
    assert sorted(p.name for p in out.iterdir()) == ["a.json", "a.png"]  # kept: restored in the other format
    assert (
        infer_main(["-i", str(tmp_path / "a.png"), "-o", str(out), "--ext", "jpg", "--overwrite", *TINY]) == 0
    )
    assert sorted(p.name for p in out.iterdir()) == ["a.jpg", "a.json"]
    Image.new("RGB", (8, 8)).save(out / "a.png")  # the user's own file of that name
    assert (
        infer_main(["-i", str(tmp_path / "a.png"), "-o", str(out), "--ext", "jpg", "--overwrite", *TINY]) == 0
    )
    assert sorted(p.name for p in out.iterdir()) == ["a.jpg", "a.json", "a.png"]


@pytest.mark.slow
def test_restorer_result_and_caption(tmp_path):
    cfg = load_config(InferConfig, ROOT / "configs" / "tiny.yaml", ["restore.tile=64", "restore.outscale=1"])
    restorer = Restorer.from_config(cfg)
    image = Image.fromarray(np.full((50, 70, 3), 128, dtype=np.uint8))
    result = restorer.restore(image, caption="Large blur, small noise. A grey wall.")
    assert result.image.size == (70, 50)
    assert result.degradation == "Large blur, small noise."
    assert result.description.startswith("A grey wall.")
    assert set(result.timings) == {"prepare", "answer", "decode", "blend", "total"}
    again = restorer.restore(image, caption="Large blur, small noise. A grey wall.")
    assert np.array_equal(np.asarray(result.image), np.asarray(again.image))  # seeded


def test_a_tile_whose_scores_were_not_finite_is_refused_with_the_dtype_to_use():
    from types import SimpleNamespace

    from pure.generate import Generation

    cfg = load_config(InferConfig)
    nan = torch.tensor([0.5, float("nan"), float("inf"), 1.0])
    out = Generation(ids=[torch.zeros(4, dtype=torch.long)], entropy=[nan], kept=[], p_token=[])
    for dtype, fix in ((torch.float16, "run with --dtype bfloat16"), (torch.bfloat16, "may be damaged")):
        restorer = Restorer(SimpleNamespace(dtype=dtype), None, None, None, cfg.sampling, cfg.restore)
        with pytest.raises(
            PureError, match=rf"^tile 3: the model's scores were NaN or infinite at 2 of 4 steps, .*{fix}"
        ):
            restorer.decode(out, 0, 3, "")


@pytest.mark.slow
def test_scores_that_are_not_finite_fail_the_image_instead_of_writing_noise():
    """Chameleon overflows in float16 (transformers' NaNs with fp16 Chameleon; its authors release bf16 only):
    NaN scores rank first in top-k, so the answer was image-token names as text and a noise tile, written as
    a restored image without a word. Now the image fails with one line saying why and what to run."""
    cfg = load_config(
        InferConfig,
        ROOT / "configs" / "tiny.yaml",
        ["restore.tile=32", "restore.tile_overlap=0", "restore.outscale=1", "sampling.max_new_tokens=64"],
    )
    restorer = Restorer.from_config(cfg)
    with torch.no_grad():
        restorer.model.lm_head.weight[:100] = float("nan")  # image tokens among them: as an overflow does
    image = Image.fromarray(np.full((32, 32, 3), 128, dtype=np.uint8))
    with pytest.raises(PureError) as caught:
        restorer.restore(image)
    message = str(caught.value)
    assert message.startswith("tile 0: the model's scores were NaN or infinite at ")
    assert message.endswith("the backbone's weights may be damaged; download or copy the model folder again")
    restorer.model.to(torch.float16)
    with pytest.raises(
        PureError, match=r"overflows in float16 .*; run with --dtype bfloat16 \(dtype=bfloat16\)"
    ):
        restorer.restore(image)


def test_split_text():
    assert split_text("Medium blur, small noise. The image shows a lion.") == (
        "Medium blur, small noise.",
        "The image shows a lion.",
    )
    assert split_text("no sentence end") == ("no sentence end", "")


@pytest.mark.slow
def test_default_model_offline_fails_fast_with_instructions(tmp_path):
    image = tmp_path / "a.png"
    Image.new("RGB", (16, 16)).save(image)
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "infer.py"),
            "-i",
            str(image),
            "-o",
            str(tmp_path / "out"),
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "python scripts/download.py models nonwhy/PURE" in proc.stderr


def test_help_explains_every_flag():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "infer.py"), "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert proc.returncode == 0
    for flag in (
        "--input",
        "--output",
        "--outscale",
        "--tile",
        "--tile-overlap",
        "--batch-size",
        "--suffix",
        "--ext",
        "--seed",
        "--color-fix",
        "--cfg-scale",
        "--temperature",
        "--caption",
        "--model",
        "--vq",
        "--dtype",
        "--device",
        "--skip-existing",
        "--overwrite",
        "--config",
        "--save-entropy-map",
    ):
        assert flag in proc.stdout


@pytest.mark.parametrize("bad", ["restore.tile=100", "restore.nonsense=1"])
def test_bad_settings_exit_2(tmp_path, bad, capsys):
    image = tmp_path / "a.png"
    Image.new("RGB", (16, 16)).save(image)
    assert infer_main(["-i", str(image), "-o", str(tmp_path / "out"), *TINY, bad]) == 2
    assert "error:" in capsys.readouterr().err


@pytest.mark.parametrize("batch", ["3", "auto"])
def test_tiling_an_identity_restorer_returns_the_input(monkeypatch, batch):
    """A model that answers with its input block: the tiled, blended result equals the input. With
    ``batch_size=auto`` and a faked 10 GiB free / 1 GiB per tile, 9 tiles are chosen; more than 4 at
    once run out of memory, so the batch is halved to 4 and the run goes on."""
    import pure.pipeline as pipeline
    from pure.generate import Generation
    from pure.tiny import synthetic_vocabulary, tiny_tokenizer
    from pure.vocab import Vocab

    vocab = Vocab.from_names(synthetic_vocabulary(), bos=0)
    tokenizer = tiny_tokenizer()

    def echo(model, prompts, vocab, sampling, generators=None, **kwargs):
        if batch == "auto" and len(prompts) > 4:
            raise torch.OutOfMemoryError("CUDA out of memory (faked)")
        answers = []
        for prompt in prompts:
            start = int((prompt == vocab.image_start).nonzero()[0])
            end = int((prompt == vocab.image_end).nonzero()[0])
            text = torch.tensor(
                tokenizer.encode("Small blur, small noise. Squares.", add_special_tokens=False)
            )
            answers.append(
                torch.cat([text, prompt[start : end + 1].cpu(), torch.tensor([vocab.end_of_turn])])
            )
        zeros = [torch.zeros(len(a)) for a in answers]
        return Generation(answers, zeros, [torch.ones(len(a), dtype=torch.long) for a in answers], zeros)

    monkeypatch.setattr(pipeline, "generate", echo)
    monkeypatch.setattr(pipeline, "free_bytes", lambda device: 10 * 2**30)
    monkeypatch.setattr(pipeline, "tile_cache_bytes", lambda *args: 2**30)
    monkeypatch.setattr(pipeline, "prefill_bytes", lambda *args: 0)
    cfg = load_config(
        InferConfig,
        ROOT / "configs" / "tiny.yaml",
        [
            "restore.tile=64",
            "restore.tile_overlap=16",
            "restore.outscale=1",
            "restore.color_fix=none",
            f"restore.batch_size={batch}",
        ],
    )
    model = type("Model", (), {"device": torch.device("cpu"), "config": None, "dtype": torch.float32})()
    restorer = Restorer(model, tokenizer, vocab, BlockVQ(), cfg.sampling, cfg.restore)
    levels = np.random.default_rng(0).integers(0, 256, (19, 25))  # 200 x 152 px: 4 x 3 overlapping tiles
    grey = np.kron(levels, np.ones((8, 8))).astype(np.uint8)
    result = restorer.restore(Image.fromarray(grey).convert("RGB"))
    assert result.image.size == (200, 152)
    assert np.array_equal(np.asarray(result.image)[..., 0], grey)
    assert result.degradation == "Small blur, small noise." and len(result.tile_answers) == 12
    if batch == "auto":
        assert result.batches["chosen"] == 9 and result.batches["used"] == 4
        assert result.batches["out_of_memory"] == ["items 0-8: out of memory at batch 9, halved to 4"]
    else:
        assert result.batches == {"requested": 3, "chosen": 3, "used": 3, "out_of_memory": []}


def test_the_work_line_counts_the_tiles_to_answer(tmp_path):
    """--tile-overlap near --tile multiplies the tiles (a 2000 px output at 512/511 px: 2.2 million): the
    run says how many tiles it is about to answer before it starts (once the models have loaded, so that
    an error of loading stays the run's one line)."""
    from pure.config import RestoreConfig
    from pure.infer import work_line
    from pure.plan import Job, Plan

    jobs = [Job(tmp_path / "a.png", tmp_path / "a.png", tmp_path / "a.json", size=(500, 500))]
    settings = RestoreConfig(outscale=4.0, tile=512, tile_overlap=511)
    per_side = (2000 - 512) // 1 + 1  # a tile every pixel, the last one flush with the edge
    assert work_line(Plan(tmp_path, jobs=jobs), settings) == (
        f"to restore: 1 image(s) at 4x, {per_side**2:,} tile(s) of 512 px (overlap 511 px), "
        "one model answer each"
    )


def test_skip_existing_says_when_kept_outputs_were_made_with_other_settings(tmp_path, capsys):
    """--skip-existing after changing the seed: the kept output is named with what differs (its sidecar
    says), once; the same settings, another batch size or a larger token budget (never a different image)
    say nothing."""
    Image.new("RGB", (8, 8), (120, 80, 40)).save(tmp_path / "a.png")
    out = tmp_path / "out"
    run = ["-i", str(tmp_path / "a.png"), "-o", str(out), "--skip-existing", *TINY]
    assert infer_main(run) == 0
    capsys.readouterr()
    same_image = ["restore.batch_size=2", "sampling.max_new_tokens=4096"]  # TINY's last item: its batch size
    assert infer_main([*run[:-1], *same_image]) == 0
    assert "other settings" not in capsys.readouterr().err
    assert infer_main([*run, "sampling.seed=5", "--outscale", "2"]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if "other settings" in line]
    assert len(lines) == 1 and "sampling.seed 0 -> 5" in lines[0]
    assert "restore.outscale 4.0 -> 2.0" in lines[0] and "a.png" in lines[0] and "--overwrite" in lines[0]
