"""Issue 11's cases end to end through scripts/infer.py's entry point (and issue 12's items 2, 4, 5
and 6 for inference): what is read, what is written where, what is refused before the models load,
and honest counts and exit codes. Most tests use a stand-in restorer (bicubic x2) so that they test
the files, not the model; case 1 also runs the tiny random model."""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms

import pure.images
import pure.pipeline
from pure.cli import benchmark_main, infer_main
from pure.config import InferConfig, load_config
from pure.images import is_marked
from pure.pipeline import check_answer_budget
from pure.plan import PlanError, plan_outputs
from pure.restoration import Restoration
from tests.icc import adobe_rgb_profile, adobe_to_srgb, png_rgba16

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--config", str(ROOT / "configs" / "tiny.yaml"), "--no-progress"]
"""Every run names the tiny models, so that no run looks for the released weights."""


class StandIn:
    """A restorer without a model: bicubic x2, alpha re-attached; can be told to stop like Ctrl-C."""

    loads = 0
    interrupt_at: int | None = None

    def __init__(self) -> None:
        self.model_revision, self.calls = "stand-in", 0

    @classmethod
    def from_config(cls, cfg) -> StandIn:
        cls.loads += 1
        return cls()

    def restore(self, image: Image.Image, alpha=None, on_step=None) -> Restoration:
        self.calls += 1
        if self.calls == self.interrupt_at:
            raise KeyboardInterrupt
        size = (image.width * 2, image.height * 2)
        result = image.resize(size, Image.BICUBIC)
        if alpha is not None:
            result.putalpha(alpha.resize(size, Image.BICUBIC))
        return Restoration(
            result, "Small blur, small noise.", "A test.", ["Small blur."], 0, {}, np.zeros(size[::-1])
        )

    def settings_dict(self) -> dict:
        return {}


@pytest.fixture
def stand_in(monkeypatch):
    monkeypatch.setattr(StandIn, "loads", 0)
    monkeypatch.setattr(StandIn, "interrupt_at", None)
    monkeypatch.setattr(pure.pipeline, "Restorer", StandIn)
    return StandIn


def _image(path: Path, size=(6, 4), colour=(120, 80, 40), **save) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, **save)
    return path


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = infer_main([*TINY, *argv])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.out, captured.err


def _files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


# ----------------------------------------------------------------------------- reading


@pytest.mark.slow
def test_case_1_adobe_rgb_16_bit_rgba_png_comes_out_srgb(tmp_path, capsys):
    """Tiny random model, AdaIN colour fix (the output's channel means are the input's): the output's
    colour is the sRGB conversion of the Adobe RGB numbers, tagged sRGB, with the alpha kept."""
    adobe = (200, 60, 60)
    pixels = np.zeros((16, 16, 4), np.uint16)
    pixels[..., :3] = np.array(adobe, np.uint16) * 257
    pixels[4:, :, 3] = 65535  # rows 0-3 transparent: white once composited
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "tree_alpha_16bit.png").write_bytes(png_rgba16(pixels, adobe_rgb_profile()))
    out = tmp_path / "out"
    argv = [
        "-i",
        str(tmp_path / "in"),
        "-o",
        str(out),
        "--outscale",
        "1",
        "--color-fix",
        "adain",
        "restore.tile=64",
    ]
    code, stdout, _ = _run(capsys, *argv)
    assert code == 0 and "1 restored, 0 skipped (output exists), 0 failed" in stdout
    srgb = adobe_to_srgb(np.array(adobe))
    assert np.abs(srgb - adobe).max() > 20  # shown without conversion, the colour is far off
    with Image.open(out / "tree_alpha_16bit.png") as tree:
        assert tree.mode == "RGBA"
        assert np.array_equal(np.asarray(tree)[..., 3], pixels[..., 3] // 257)
        mean = np.asarray(tree, dtype=float)[..., :3].mean((0, 1))
        profile = ImageCms.ImageCmsProfile(io.BytesIO(tree.info["icc_profile"]))
        assert ImageCms.getProfileDescription(profile).startswith("sRGB")
    # Red tells the two apart (sRGB 231 against Adobe RGB 200; green and blue differ by 3 levels only);
    # clipping of the random model's texture moves the means by a few levels.
    expected, unconverted = (4 * 255 + 12 * srgb[0]) / 16, (4 * 255 + 12 * adobe[0]) / 16
    assert abs(mean[0] - expected) <= 4 and abs(mean[0] - unconverted) > 15
    sidecar = json.loads((out / "tree_alpha_16bit.json").read_text())
    assert sidecar["color_profile"] == "'Adobe RGB (1998)' -> sRGB; sRGB profile embedded"
    steps = sidecar["read"]["steps"]
    assert "ICC profile 'Adobe RGB (1998)' converted to sRGB (relative colorimetric)" in steps
    assert sidecar["alpha"] and sidecar["read"]["mode"] == "RGBA"


def test_case_1_every_pixel_is_srgb_through_the_whole_run(tmp_path, capsys, stand_in):
    """The same file through the stand-in restorer (bicubic x2): the written pixels are the sRGB ones."""
    pixels = np.zeros((16, 16, 4), np.uint16)
    pixels[..., :3] = np.array([200, 60, 60], np.uint16) * 257
    pixels[4:, :, 3] = 65535
    (tmp_path / "tree_alpha_16bit.png").write_bytes(png_rgba16(pixels, adobe_rgb_profile()))
    code, _, _ = _run(capsys, "-i", str(tmp_path / "tree_alpha_16bit.png"), "-o", str(tmp_path / "out"))
    assert code == 0
    with Image.open(tmp_path / "out" / "tree_alpha_16bit.png") as tree:
        assert tree.mode == "RGBA" and "icc_profile" in tree.info
        restored = np.asarray(tree, dtype=int)
    assert np.abs(restored[12:, :, :3] - adobe_to_srgb(np.array([200, 60, 60]))).max() <= 1
    assert (restored[:6, :, 3] == 0).all() and (restored[10:, :, 3] == 255).all()


def test_case_2_float_tiff_is_restored_from_its_values(tmp_path, capsys, stand_in):
    grey = np.linspace(0, 1, 48, dtype=np.float32).reshape(6, 8)
    Image.fromarray(grey, "F").save(tmp_path / "float.tif")
    code, stdout, _ = _run(capsys, "-i", str(tmp_path / "float.tif"), "-o", str(tmp_path / "out"))
    assert code == 0 and "1 restored" in stdout
    restored = np.asarray(Image.open(tmp_path / "out" / "float.png"), dtype=float)
    assert abs(restored.mean() - grey.mean() * 255) < 2 and restored.max() > 200  # not black
    assert json.loads((tmp_path / "out" / "float.json").read_text())["read"]["mode"] == "F"


def test_case_4_animated_gif_is_refused_in_one_line_before_the_models_load(tmp_path, capsys, stand_in):
    frames = [Image.new("RGB", (8, 8), c) for c in ("red", "green", "blue")]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    code, stdout, stderr = _run(capsys, "-i", str(tmp_path / "anim.gif"), "-o", str(tmp_path / "out"))
    assert code == 1 and stand_in.loads == 0
    assert stderr.count("GIF with 3 frames; pure reads still images only") == 1
    assert "0 restored, 0 skipped (output exists), 1 failed" in stdout
    assert _files(tmp_path / "out") == []


# ----------------------------------------------------------------------------- writing and folders


def test_case_5_same_name_different_extensions_never_share_an_output(tmp_path, capsys, stand_in):
    _image(tmp_path / "in" / "holiday.jpg", colour=(200, 0, 0))
    _image(tmp_path / "in" / "holiday.png", colour=(0, 0, 200))
    out = tmp_path / "out"
    assert _run(capsys, "-i", str(tmp_path / "in"), "-o", str(out))[0] == 0
    assert _files(out) == ["holiday.jpg.jpg", "holiday.jpg.json", "holiday.png.json", "holiday.png.png"]
    for name in ("holiday.jpg", "holiday.png"):
        assert json.loads((out / f"{name}.json").read_text())["input"] == str(tmp_path / "in" / name)

    png = tmp_path / "png"
    assert _run(capsys, "-i", str(tmp_path / "in"), "-o", str(png), "--ext", "png")[0] == 0
    assert _files(png) == ["holiday.jpg.json", "holiday.jpg.png", "holiday.png.json", "holiday.png.png"]
    code, _, stderr = _run(capsys, "-i", str(tmp_path / "in"), "-o", str(png), "--ext", "png")
    assert code == 2 and "pass --overwrite" in stderr and stand_in.loads == 2  # refused before loading
    assert _run(capsys, "-i", str(tmp_path / "in"), "-o", str(png), "--ext", "png", "--overwrite")[0] == 0
    red = np.asarray(Image.open(png / "holiday.jpg.png"))[..., 0].mean()
    blue = np.asarray(Image.open(png / "holiday.png.png"))[..., 2].mean()
    assert red > 150 and blue > 150  # each output is still its own input's


def test_case_6_non_image_files_are_skipped_not_failed(tmp_path, capsys, stand_in):
    inputs = tmp_path / "in"
    _image(inputs / "a.png")
    for name in ("desktop.ini", "Thumbs.db", ".DS_Store", "a.json", "LICENSE.md"):
        (inputs / name).write_text("not an image")
    code, stdout, stderr = _run(capsys, "-i", str(inputs), "-o", str(tmp_path / "out"))
    assert code == 0
    assert "1 restored, 0 skipped (output exists), 0 failed, 5 non-image file(s) ignored" in stdout
    assert "skipped 5 file(s) that are not images" in stderr and "failed" not in stderr


def test_readme_samples_folder_plans_its_license_as_skipped(tmp_path):
    """Issue 12, item 2: the README's first command on data/samples has nothing to fail."""
    plan = plan_outputs(ROOT / "data" / "samples", tmp_path / "out")
    assert [p.name for p in plan.not_images] == ["LICENSE.md"] and plan.failed == []
    assert len(plan.jobs) == 4


def test_counts_are_separate_and_exit_codes_honest(tmp_path, capsys, stand_in):
    inputs = tmp_path / "in"
    _image(inputs / "done.png")
    _image(tmp_path / "out" / "done.png")
    (tmp_path / "out" / "done.json").write_text("{}")  # the sidecar, written last: done.png is complete
    _image(inputs / "new.png")
    (inputs / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    (inputs / "notes.txt").write_text("")
    code, stdout, stderr = _run(capsys, "-i", str(inputs), "-o", str(tmp_path / "out"), "--skip-existing")
    assert code == 1
    assert "1 restored, 1 skipped (output exists), 1 failed, 1 non-image file(s) ignored" in stdout
    assert f"failed: {inputs / 'broken.png'}: not a readable image" in stderr


def test_skip_existing_keeps_a_restoration_written_with_another_ext(tmp_path, capsys, stand_in):
    """--ext png, then --skip-existing (auto: JPEG for a JPEG input) wrote a.jpg and replaced the a.json
    that described a.png."""
    _image(tmp_path / "in" / "a.jpg", format="JPEG")
    out = tmp_path / "out"
    assert _run(capsys, "-i", str(tmp_path / "in"), "-o", str(out), "--ext", "png")[0] == 0
    sidecar = (out / "a.json").read_text()
    code, stdout, _ = _run(capsys, "-i", str(tmp_path / "in"), "-o", str(out), "--skip-existing")
    assert code == 0 and "0 restored, 1 skipped (output exists)" in stdout
    assert _files(out) == ["a.json", "a.png"] and (out / "a.json").read_text() == sidecar
    code, stdout, _ = _run(capsys, "-i", str(tmp_path / "in"), "-o", str(out), "--overwrite")
    assert code == 0 and _files(out) == ["a.jpg", "a.json"]  # --overwrite replaces it in the new format


def test_benchmark_runs_inference_in_process_with_the_same_input_rules(tmp_path, capsys, stand_in):
    for side, size in (("lr", (6, 4)), ("hr", (12, 8))):
        _image(tmp_path / "sets" / "mini" / side / "a.png", size)
    for name in ("desktop.ini", "Thumbs.db", ".DS_Store"):
        (tmp_path / "sets" / "mini" / "lr" / name).write_text("")
    run = tmp_path / "run"
    argv = ["mini", "--root", str(tmp_path / "sets"), "--run", str(run), "--metrics", "psnr", *TINY]
    assert benchmark_main([*argv, "--save-entropy-map", "--outscale", "2"]) == 0  # the stand-in: x2
    assert stand_in.loads == 1
    results = json.loads((run / "metrics.json").read_text())
    assert results["count"] == 1  # entropy maps are not scored
    sidecar = json.loads((run / "sr" / "a.json").read_text())
    assert (results["name"], results["model"], results["adapter"]) == ("mini", sidecar["model"], None)
    assert (run / "sr" / "entropy" / "a.png").is_file()
    assert "1 restored" in capsys.readouterr().out
    assert benchmark_main([*argv, "--outscale", "2", "--name", "tiny-x2", "--skip-existing"]) == 0
    assert json.loads((run / "metrics.json").read_text())["name"] == "tiny-x2"  # runs of one set told apart
    assert "tiny-x2" in capsys.readouterr().out
    rescore = ["mini", "--root", str(tmp_path / "sets"), "--run", str(run), "--metrics", "psnr"]
    assert benchmark_main([*rescore, "--skip-inference", "--no-progress"]) == 0
    results = json.loads((run / "metrics.json").read_text())
    assert (results["model"], results["adapter"]) == (sidecar["model"], None)  # what restored RUN/sr


def test_case_7_images_only_in_subfolders(tmp_path, capsys, stand_in):
    inputs = tmp_path / "in"
    _image(inputs / "2023" / "x.png")
    _image(inputs / "2024" / "y.jpg")
    code, _, stderr = _run(capsys, "-i", str(inputs), "-o", str(tmp_path / "out"))
    assert code == 2 and stand_in.loads == 0
    assert f"no images in {inputs}: found 2 subfolder(s) (2023, 2024; pass --recursive" in stderr
    out = inputs / "restored"  # inside the input folder: never read back as input
    code, stdout, _ = _run(capsys, "-i", str(inputs), "-o", str(out), "--recursive")
    assert code == 0 and "2 restored" in stdout
    assert _files(out) == ["2023/x.json", "2023/x.png", "2024/y.jpg", "2024/y.json"]
    code, stdout, _ = _run(capsys, "-i", str(inputs), "-o", str(out), "--recursive", "--skip-existing")
    assert code == 0 and "0 restored, 2 skipped (output exists), 0 failed" in stdout


def test_case_8_bad_output_folders_fail_in_one_line_before_the_models_load(tmp_path, capsys, stand_in):
    image = _image(tmp_path / "a.png")
    (tmp_path / "file.txt").write_text("")
    cases = {
        str(tmp_path / "file.txt"): "is a file; -o takes a folder",
        str(tmp_path / "restored.png"): "looks like an image file name, but -o takes a folder",
        str(tmp_path / "file.txt" / "out"): "cannot write into the output folder",
    }
    for output, message in cases.items():
        code, _, stderr = _run(capsys, "-i", str(image), "-o", output)
        assert code == 2 and message in stderr and len(stderr.strip().splitlines()) == 1, output
    assert stand_in.loads == 0 and not (tmp_path / "restored.png").exists()


def test_an_output_name_too_long_for_the_file_system_fails_before_the_models_load(tmp_path, capsys, stand_in):
    image = _image(tmp_path / ("a" * 251 + ".png"))
    code, _, stderr = _run(capsys, "-i", str(image), "-o", str(tmp_path / "out"), "--suffix", "x4")
    assert (
        code == 2 and "is longer than this file system allows (255 bytes)" in stderr and stand_in.loads == 0
    )


def test_an_output_never_replaces_its_input(tmp_path, capsys, stand_in):
    image = _image(tmp_path / "a.png")
    before = image.read_bytes()
    for flags in ([], ["--overwrite"], ["--skip-existing"]):
        code, _, stderr = _run(capsys, "-i", str(tmp_path), "-o", str(tmp_path), "--ext", "png", *flags)
        assert code == 2 and "needs a --suffix" in stderr  # into the input folder: refused before anything
    assert image.read_bytes() == before and stand_in.loads == 0


def test_ctrl_c_prints_one_line_and_the_summary(tmp_path, capsys, stand_in):
    for name in ("a.png", "b.png", "c.png"):
        _image(tmp_path / "in" / name)
    stand_in.interrupt_at = 2
    code, stdout, stderr = _run(capsys, "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"))
    assert code == 130
    work, interrupted = stderr.strip().splitlines()  # what it was about to do, then how far it got
    assert work.startswith("to restore: 3 image(s) at ")
    assert interrupted == (
        "interrupted: 1 of 3 images restored; run the same command with --skip-existing to continue"
    )
    assert "1 restored, 0 skipped (output exists), 0 failed" in stdout
    assert _files(tmp_path / "out") == ["a.json", "a.png"]  # nothing half written


def test_ctrl_c_while_the_models_load(tmp_path, capsys, monkeypatch):
    def interrupted(cfg):
        raise KeyboardInterrupt

    monkeypatch.setattr(pure.pipeline.Restorer, "from_config", interrupted)
    code, stdout, stderr = _run(capsys, "-i", str(_image(tmp_path / "a.png")), "-o", str(tmp_path / "out"))
    assert code == 130 and "interrupted: 0 of 1 images restored" in stderr and "0 restored" in stdout


def test_a_rerun_into_the_input_folder_does_not_restore_its_own_outputs(tmp_path, capsys, stand_in):
    """With --suffix into the input folder, the second run sees the first run's outputs among the
    inputs: they are skipped as outputs of an earlier run, not refused or restored again."""
    _image(tmp_path / "a.png")
    _image(tmp_path / "b.png")
    code, _, _ = _run(capsys, "-i", str(tmp_path), "-o", str(tmp_path), "--suffix", "x2")
    assert code == 0 and _files(tmp_path) == [
        "a.png",
        "a_x2.json",
        "a_x2.png",
        "b.png",
        "b_x2.json",
        "b_x2.png",
    ]
    for flags in (["--skip-existing"], ["--overwrite"]):
        code, stdout, stderr = _run(
            capsys, "-i", str(tmp_path), "-o", str(tmp_path), "--suffix", "x2", *flags
        )
        assert code == 0, stderr
        assert "pass them by name): a_x2.png, b_x2.png" in stderr
    assert "a_x2_x2.png" not in _files(tmp_path)
    # a new suffix: the marked outputs of the first run are not inputs either
    code, stdout, stderr = _run(capsys, "-i", str(tmp_path), "-o", str(tmp_path), "--suffix", "x4")
    assert code == 0 and "2 restored" in stdout and "a_x2.png, b_x2.png" in stderr, stderr
    assert [n for n in _files(tmp_path) if "x4" in n] == ["a_x4.json", "a_x4.png", "b_x4.json", "b_x4.png"]
    # outside the input folder, or given by name, an earlier output is an input like any other
    assert [job.source.name for job in plan_outputs(tmp_path / "a_x2.png", tmp_path, suffix="x8").jobs] == [
        "a_x2.png"
    ]
    assert len(plan_outputs(tmp_path, tmp_path / "elsewhere" / "..", suffix="x8").jobs) == 2
    assert len(plan_outputs(tmp_path, tmp_path.parent / "other").jobs) == 6
    plan = plan_outputs(tmp_path, tmp_path, suffix="x2", existing="skip")
    assert [p.name for p in plan.previous_outputs] == ["a_x2.png", "a_x4.png", "b_x2.png", "b_x4.png"]
    assert sorted(job.source.name for job in plan.existing) == ["a.png", "b.png"] and not plan.jobs


def test_ctrl_c_while_libraries_load_is_one_line(tmp_path, capsys, monkeypatch):
    import pure.plan

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pure.plan, "plan_outputs", interrupted)
    code, _, stderr = _run(capsys, "-i", str(_image(tmp_path / "a.png")), "-o", str(tmp_path / "out"))
    assert code == 130 and stderr.strip() == "interrupted"


def test_a_symlink_loop_is_searched_once(tmp_path):
    """A link to a folder above it must not repeat the tree (--recursive followed one 40 levels deep)."""
    _image(tmp_path / "in" / "a.png")
    _image(tmp_path / "in" / "sub" / "b.png")
    (tmp_path / "in" / "sub" / "up").symlink_to(tmp_path / "in", target_is_directory=True)
    (tmp_path / "in" / "again").symlink_to(tmp_path / "in" / "sub", target_is_directory=True)
    _image(tmp_path / "elsewhere" / "c.png")
    (tmp_path / "in" / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    plan = plan_outputs(tmp_path / "in", tmp_path / "out", recursive=True)
    # "again" sorts before "sub" but names the same folder: the folder keeps its own name; a link to a
    # folder outside the input is followed
    assert sorted(str(job.source.relative_to(tmp_path / "in")) for job in plan.jobs) == [
        "a.png",
        "linked/c.png",
        "sub/b.png",
    ]


def test_skipped_files_of_subfolders_are_named_from_the_input_folder(tmp_path, capsys, stand_in):
    """With --recursive, two Thumbs.db were listed as "Thumbs.db, Thumbs.db" and a hidden image to be passed
    by name gave no folder to find it in."""
    _image(tmp_path / "in" / "a.png")
    _image(tmp_path / "in" / "1998" / ".b.png")
    for folder in ("", "1998"):
        (tmp_path / "in" / folder / "Thumbs.db").write_text("not an image")
    code, _, stderr = _run(capsys, "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "-r")
    assert code == 0 and "that are not images: 1998/Thumbs.db, Thumbs.db" in stderr
    assert "pass it by name): 1998/.b.png" in stderr


def test_subfolders_left_out_without_recursive_are_named(tmp_path, capsys, stand_in):
    _image(tmp_path / "in" / "a.png")
    _image(tmp_path / "in" / "holiday" / "b.png")
    code, _, stderr = _run(capsys, "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"))
    assert code == 0 and "did not search 1 subfolder(s) (holiday); pass --recursive" in stderr
    assert _files(tmp_path / "out") == ["a.json", "a.png"]


def test_an_earlier_runs_outputs_in_a_subfolder_are_not_recommended_nor_restored(tmp_path, capsys, stand_in):
    """`-i photos -o elsewhere` said "did not search 1 subfolder(s) (restored); pass --recursive", and with
    --recursive restored photos/restored, pure's own outputs of an earlier run, again."""
    photos = tmp_path / "photos"
    _image(photos / "a.png")
    _image(photos / "holiday" / "b.png")
    code, _, _ = _run(capsys, "-i", str(photos / "a.png"), "-o", str(photos / "restored"))
    assert code == 0 and (photos / "restored" / "a.png").is_file()  # marked by pure
    code, _, stderr = _run(capsys, "-i", str(photos), "-o", str(tmp_path / "elsewhere"))
    assert code == 0 and "did not search 1 subfolder(s) (holiday); pass --recursive" in stderr
    assert (
        "did not search 1 subfolder(s) holding only images pure wrote (an earlier run's outputs, which "
        "--recursive skips too): restored\n" in stderr
    )
    code, stdout, stderr = _run(capsys, "-i", str(photos), "-o", str(tmp_path / "again"), "-r")
    assert code == 0 and "skipped 1 output(s) of an earlier run here" in stderr
    assert "pass them by name): restored/a.png\n" in stderr
    assert _files(tmp_path / "again") == ["a.json", "a.png", "holiday/b.json", "holiday/b.png"]
    # given by name, an earlier output is restored as asked
    plan = plan_outputs(photos / "restored" / "a.png", tmp_path / "third")
    assert [job.source for job in plan.jobs] == [photos / "restored" / "a.png"]
    for path in (photos / "holiday" / "b.png", photos / "a.png"):
        path.unlink()
    (photos / "holiday").rmdir()
    with pytest.raises(
        PlanError, match=r"found 1 subfolder\(s\) of an earlier run's outputs only \(restored\)$"
    ):
        plan_outputs(photos, tmp_path / "fourth")


def test_a_run_that_writes_nothing_leaves_no_new_output_folder(tmp_path, capsys, stand_in):
    notes = tmp_path / "notes.png"
    notes.write_text("not an image")
    code, _, stderr = _run(capsys, "-i", str(notes), "-o", str(tmp_path / "out"))
    assert code == 1 and "not a readable image" in stderr and not (tmp_path / "out").exists()
    long_name = _image(tmp_path / ("a" * 251 + ".png"))  # refused after the folder was made and checked
    code, _, stderr = _run(capsys, "-i", str(long_name), "-o", str(tmp_path / "out2"), "--suffix", "x4")
    assert code == 2 and "longer than this file system allows" in stderr and not (tmp_path / "out2").exists()
    (tmp_path / "kept").mkdir()
    code, _, _ = _run(capsys, "-i", str(notes), "-o", str(tmp_path / "kept"))
    assert code == 1 and (tmp_path / "kept").is_dir()  # a folder that was there before stays


def test_an_original_named_like_an_output_is_never_replaced(tmp_path, capsys, stand_in):
    """photo_edit.jpg is the user's own (no photo_edit.json beside it), not an earlier run's output of
    photo.jpg with --suffix edit: refused with every flag, and left as it was."""
    _image(tmp_path / "photo.jpg")
    original = _image(tmp_path / "photo_edit.jpg", colour=(1, 2, 3)).read_bytes()
    for flags in ([], ["--overwrite"], ["--skip-existing"]):
        code, _, stderr = _run(capsys, "-i", str(tmp_path), "-o", str(tmp_path), "--suffix", "edit", *flags)
        assert code == 2 and "would replace an input" in stderr, flags
    assert (tmp_path / "photo_edit.jpg").read_bytes() == original


def test_the_input_folder_as_output_needs_a_suffix_whatever_the_extension(tmp_path, capsys, stand_in):
    _image(tmp_path / "a.jpg")
    code, _, stderr = _run(capsys, "-i", str(tmp_path), "-o", str(tmp_path), "--ext", "png")
    assert code == 2 and "needs a --suffix" in stderr and _files(tmp_path) == ["a.jpg"]


@pytest.mark.parametrize("suffix", ["x/../../escaped", "/abs", "a\\b"])
def test_a_suffix_cannot_leave_the_output_folder(tmp_path, capsys, suffix):
    _image(tmp_path / "in" / "a.png")
    code, _, stderr = _run(
        capsys, "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--suffix", suffix
    )
    assert code == 2 and "--suffix" in stderr and not (tmp_path / "out").exists()
    assert _files(tmp_path) == ["in/a.png"]


def test_an_output_too_large_for_jpeg(tmp_path):
    """libjpeg writes at most 65,500 px a side: auto switches to PNG, --ext jpg fails the input up front."""
    _image(tmp_path / "in" / "pano.jpg", size=(8200, 2))
    _image(tmp_path / "in" / "small.jpg")
    plan = plan_outputs(tmp_path / "in", tmp_path / "out", outscale=8)
    assert sorted(job.image.name for job in plan.jobs) == ["pano.png", "small.jpg"]
    plan = plan_outputs(tmp_path / "in", tmp_path / "out", ext="jpg", outscale=8)
    assert [job.image.name for job in plan.jobs] == ["small.jpg"]
    assert len(plan.failed) == 1 and "65600 x 16 px" in plan.failed[0] and "--ext png" in plan.failed[0]


def test_ext_jpg_writes_png_only_for_images_with_transparency(tmp_path):
    """--ext jpg: an RGBA PNG whose alpha is opaque everywhere, or whose tRNS colour no pixel has, loses that
    alpha on reading, so it is a JPEG like any other; only real transparency makes a PNG."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.new("RGBA", (9, 7), (10, 200, 30, 255)).save(inputs / "opaque.png")
    Image.new("RGB", (9, 7), (10, 200, 30)).save(inputs / "unused_key.png", transparency=(1, 2, 3))
    Image.new("RGBA", (9, 7), (10, 200, 30, 100)).save(inputs / "semi.png")
    plan = plan_outputs(inputs, tmp_path / "out", ext="jpg", outscale=2)
    assert sorted(job.image.name for job in plan.jobs) == ["opaque.jpg", "semi.png", "unused_key.jpg"]
    assert plan.png_for_alpha == [inputs / "semi.png"]


def test_an_output_larger_than_memory_fails_up_front(tmp_path, monkeypatch):
    """An --outscale whose output's canvases alone would not fit in memory fails that input before any model
    loads (instead of the kernel killing the run), naming the largest --outscale that would."""
    monkeypatch.setattr(pure.plan, "physical_memory", lambda: 2**30)
    _image(tmp_path / "in" / "a.png", size=(10, 10))
    assert len(plan_outputs(tmp_path / "in", tmp_path / "out", outscale=600).jobs) == 1  # 36 Mpx: 0.8 GiB
    plan = plan_outputs(tmp_path / "in", tmp_path / "out", outscale=1000)  # 100 Mpx: 2.2 GiB
    assert not plan.jobs and plan.failed == [
        f"{tmp_path / 'in' / 'a.png'}: the 10,000 x 10,000 px output needs more memory than this machine has "
        "(1 GiB) for its canvases alone; pass an --outscale below 668"  # 668.88: 669 would fail too
    ]
    assert len(plan_outputs(tmp_path / "in", tmp_path / "out", outscale=668.8).jobs) == 1
    assert pure.plan._round_down(32_768) == "32700" and pure.plan._round_down(0.51279) == "0.512"  # as typed


def test_an_input_larger_than_memory_fails_up_front_whatever_the_scale(tmp_path, monkeypatch):
    """A header may claim any size (a 69-byte PNG can claim 2,000,000 px a side): an input that cannot even
    be read in memory fails before any model loads, even with an --outscale that makes its output small."""
    monkeypatch.setattr(pure.plan, "physical_memory", lambda: 1000)  # bytes: below 10 x 10 x 15
    _image(tmp_path / "in" / "a.png", size=(10, 10))
    plan = plan_outputs(tmp_path / "in", tmp_path / "out", outscale=0.5)
    assert not plan.jobs and plan.failed == [
        f"{tmp_path / 'in' / 'a.png'}: the 10 x 10 px input needs more memory than this machine has (0 GiB) "
        "just to be read; shrink or crop it first"
    ]


def test_skip_existing_restores_an_output_whose_sidecar_is_missing(tmp_path):
    """The sidecar is written after the image: an image without it was interrupted, so it is redone."""
    _image(tmp_path / "in" / "a.png")
    _image(tmp_path / "in" / "b.png")
    _image(tmp_path / "out" / "a.png")
    _image(tmp_path / "out" / "b.png")
    (tmp_path / "out" / "b.json").write_text("{}")
    plan = plan_outputs(tmp_path / "in", tmp_path / "out", existing="skip")
    assert [job.source.name for job in plan.jobs] == ["a.png"]
    assert [job.source.name for job in plan.existing] == ["b.png"]
    entropy = plan_outputs(tmp_path / "in", tmp_path / "out", existing="skip", entropy=True)
    assert len(entropy.jobs) == 2  # maps asked for now, none written before


def test_skip_existing_needs_no_write_access_to_a_finished_subfolder(tmp_path, monkeypatch):
    """out/sub holds its restorations and cannot be written (archived, another user's): --skip-existing
    writes nothing there, so it restores the rest; an input that would be written there is refused."""
    _image(tmp_path / "in" / "a.png")
    _image(tmp_path / "in" / "sub" / "b.png")
    _image(tmp_path / "out" / "sub" / "b.png")
    (tmp_path / "out" / "sub" / "b.json").write_text("{}")
    make = pure.plan.tempfile.TemporaryFile

    def read_only_sub(dir):  # as root, chmod cannot make a folder unwritable
        if Path(dir) == tmp_path / "out" / "sub":
            raise PermissionError(13, "Permission denied")
        return make(dir=dir)

    monkeypatch.setattr(pure.plan.tempfile, "TemporaryFile", read_only_sub)
    plan = plan_outputs(tmp_path / "in", tmp_path / "out", recursive=True, existing="skip")
    assert [job.source.name for job in plan.jobs] == ["a.png"]
    assert [job.source.name for job in plan.existing] == ["b.png"]
    with pytest.raises(PlanError, match="cannot write into the output subfolder .*sub .Permission denied"):
        plan_outputs(tmp_path / "in", tmp_path / "out", recursive=True, existing="overwrite")


@pytest.mark.skipif(sys.platform != "linux", reason="names that are not UTF-8 exist on Linux file systems")
def test_a_file_name_that_is_not_utf8(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    name = os.fsdecode(b"bad\xff.png")
    _image(folder / name)
    _image(folder / "good.png")
    plan = plan_outputs(folder, tmp_path / "out")
    assert sorted(job.image.name for job in plan.jobs) == sorted([name, "good.png"])


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_a_named_pipe_is_not_opened(tmp_path):
    """Opening a pipe named like an image would wait forever for a writer."""
    _image(tmp_path / "in" / "a.png")
    os.mkfifo(tmp_path / "in" / "pipe.png")
    plan = plan_outputs(tmp_path / "in", tmp_path / "out")
    assert [job.source.name for job in plan.jobs] == ["a.png"]
    assert len(plan.failed) == 1 and "not a regular file" in plan.failed[0]
    with pytest.raises(PlanError, match="not a regular file"):
        plan_outputs(tmp_path / "in" / "pipe.png", tmp_path / "out")


def test_ext_jpg_with_transparency_is_png_and_said(tmp_path, capsys, stand_in):
    _image(tmp_path / "in" / "a.png")
    Image.new("RGBA", (6, 4), (1, 2, 3, 100)).save(tmp_path / "in" / "b.png")
    code, _, stderr = _run(capsys, "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--ext", "jpg")
    assert code == 0 and "writing 1 image(s) with transparency as PNG (JPEG has no alpha): b.png" in stderr
    assert _files(tmp_path / "out") == ["a.jpg", "a.json", "b.json", "b.png"]


def test_images_in_formats_pillow_cannot_read_fail_with_the_format_named(tmp_path):
    """A phone's HEIC photo or a camera raw file is an image the user meant to restore: it fails (exit 1)
    saying which format it is and what to do, instead of being ignored as a non-image file."""
    _image(tmp_path / "in" / "a.png")
    (tmp_path / "in" / "raw.DNG").write_bytes(b"II*\0raw")
    (tmp_path / "in" / "notes.txt").write_text("x")
    plan = plan_outputs(tmp_path / "in", tmp_path / "out")
    assert [job.source.name for job in plan.jobs] == ["a.png"] and plan.not_images == [
        tmp_path / "in" / "notes.txt"
    ]
    assert plan.failed == [
        f"{tmp_path / 'in' / 'raw.DNG'}: a camera raw format, an image format Pillow cannot read here; "
        "convert it to PNG or JPEG"
    ]
    (tmp_path / "photo.heic").write_bytes(b"\0\0\0\x18ftypheic")
    if pure.images.unreadable_format(tmp_path / "photo.heic"):  # pillow-heif not installed
        plan = plan_outputs(tmp_path / "photo.heic", tmp_path / "out")
        assert not plan.jobs and "HEIC/HEIF, an image format Pillow cannot read here" in plan.failed[0]
        assert "pip install pillow-heif" in plan.failed[0]


def test_a_broken_link_and_an_empty_file_say_what_they_are(tmp_path):
    _image(tmp_path / "in" / "a.png")
    (tmp_path / "in" / "empty.png").touch()
    (tmp_path / "in" / "link.png").symlink_to(tmp_path / "gone.png")
    plan = plan_outputs(tmp_path / "in", tmp_path / "out")
    assert [job.source.name for job in plan.jobs] == ["a.png"]
    assert sorted(plan.failed) == [
        f"{tmp_path / 'in' / 'empty.png'}: an empty file (0 bytes), not an image",
        f"{tmp_path / 'in' / 'link.png'}: a link to {tmp_path / 'gone.png'}, which does not exist",
    ]


def test_folders_a_failed_run_made_are_removed(tmp_path, capsys):
    """A run that stops after planning (here: an adapter folder that does not exist, found before the
    backbone loads) leaves no empty output folders behind, nested ones included."""
    _image(tmp_path / "in" / "a.png")
    out = tmp_path / "new" / "a" / "b"
    code, _, stderr = _run(capsys, "-i", str(tmp_path / "in"), "-o", str(out), "--adapter", "no-such-adapter")
    assert code == 2 and f"=no-such-adapter (relative to the current folder {Path.cwd()}) does not" in stderr
    assert not (tmp_path / "new").exists()


def test_threads_must_be_positive(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        infer_main(["-i", str(tmp_path), "-o", str(tmp_path / "out"), "--threads", "0"])
    assert exit_.value.code == 2 and "--threads: must be at least 1" in capsys.readouterr().err


def test_an_answer_budget_too_small_for_one_tile_is_refused_before_loading(tmp_path, capsys):
    """The budget counts the text too: 24 tokens hold a 32 px tile's 24-token image but not its text."""
    _image(tmp_path / "in" / "a.png")
    for budget, needed in ((24, 40), (39, 40)):  # tile 32: 24-token image; tiny.yaml: 16 text tokens
        code, _, stderr = _run(
            capsys,
            "-i",
            str(tmp_path / "in"),
            "-o",
            str(tmp_path / "out"),
            f"sampling.max_new_tokens={budget}",
            "restore.tile=32",
            "restore.tile_overlap=0",
        )
        assert code == 2 and f"can take {needed} tokens" in stderr
    code, _, stderr = _run(
        capsys, "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "sampling.max_new_tokens=5"
    )
    assert code == 2 and "sampling.max_new_tokens=5" in stderr and "answer can take" in stderr
    assert not (tmp_path / "out").exists()


def test_a_draft_longer_than_the_tiles_image_is_refused_before_loading(tmp_path, capsys):
    """A 32 px tile's image block is 24 tokens: drafting more is refused (buffers grow with draft_len)."""
    _image(tmp_path / "in" / "a.png")
    common = ("-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--tile", "32", "--tile-overlap", "0")
    code, _, stderr = _run(capsys, *common, "--speculative", "jacobi", "--draft-len", "25")
    assert code == 2 and stderr.strip().endswith(
        "--draft-len 25: a 32 px tile's image has 24 tokens, so no more can be drafted; "
        "pass a smaller one (default 8)"
    )
    assert not (tmp_path / "out").exists()
    overrides = ["restore.tile=32", "restore.tile_overlap=0", "restore.draft_len=25"]
    cfg = load_config(InferConfig, None, overrides)
    check_answer_budget(cfg.sampling, cfg.restore)  # unused without restore.speculative: not refused


def test_a_folder_in_an_outputs_place_is_refused_up_front(tmp_path, capsys, stand_in):
    _image(tmp_path / "in" / "a.png")
    (tmp_path / "out" / "a.png").mkdir(parents=True)
    code, _, stderr = _run(capsys, "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--overwrite")
    assert code == 2 and "would replace the folder" in stderr and stand_in.loads == 0


def test_an_original_beside_one_input_or_in_an_output_subfolder_is_kept(tmp_path, capsys, stand_in):
    """The user's own a_x1.png beside a.png, or y2023/a.png when -o is the input's subfolder y2023: no
    sidecar and no pure mark, so not pure's. Refused with every flag (never the advice --overwrite)."""
    single = tmp_path / "single"
    _image(single / "a.png")
    original = _image(single / "a_x1.png", colour=(1, 2, 3)).read_bytes()
    for flags in ([], ["--overwrite"], ["--skip-existing"]):
        code, _, stderr = _run(
            capsys, "-i", str(single / "a.png"), "-o", str(single), "--suffix", "x1", *flags
        )
        assert code == 2 and "which pure did not write" in stderr and "another --suffix" in stderr, flags
        assert "--overwrite" not in stderr
    assert (single / "a_x1.png").read_bytes() == original
    tree = tmp_path / "tree"
    _image(tree / "a.png")
    kept = _image(tree / "y2023" / "a.png", colour=(4, 5, 6)).read_bytes()
    _image(tree / "y2023" / "other.png")
    code, _, stderr = _run(capsys, "-i", str(tree), "-r", "-o", str(tree / "y2023"), "--overwrite")
    assert code == 2 and "which pure did not write" in stderr
    assert (tree / "y2023" / "a.png").read_bytes() == kept


def test_the_output_subfolder_left_out_of_the_search_is_named(tmp_path, capsys, stand_in):
    _image(tmp_path / "in" / "a.png")
    _image(tmp_path / "in" / "sr" / "old.png")
    code, _, stderr = _run(capsys, "-i", str(tmp_path / "in"), "-r", "-o", str(tmp_path / "in" / "sr"))
    assert code == 0 and "did not search the output folder" in stderr
    assert "sr/a.png" in _files(tmp_path / "in")
    assert plan_outputs(tmp_path / "in", tmp_path / "out").output_not_searched is False


def test_an_interrupted_output_without_its_sidecar_is_still_pure_s(tmp_path, capsys, stand_in):
    """Killed between the image and its sidecar: the image carries pure's mark, so an in-place rerun
    restores that input again instead of calling the image the user's."""
    _image(tmp_path / "a.png")
    _image(tmp_path / "b.png")
    code, _, _ = _run(capsys, "-i", str(tmp_path), "-o", str(tmp_path), "--suffix", "x1")
    assert code == 0 and is_marked(tmp_path / "a_x1.png")
    (tmp_path / "a_x1.json").unlink()
    code, stdout, stderr = _run(
        capsys, "-i", str(tmp_path), "-o", str(tmp_path), "--suffix", "x1", "--skip-existing"
    )
    assert code == 0, stderr
    assert "1 restored, 1 skipped" in stdout
    assert (tmp_path / "a_x1.json").exists() and "a_x1_x1.png" not in _files(tmp_path)


def test_a_recursive_rerun_in_place_never_takes_the_entropy_maps_for_inputs(tmp_path, capsys, stand_in):
    _image(tmp_path / "a.png")
    _image(tmp_path / "sub" / "b.png")
    args = ["-i", str(tmp_path), "-o", str(tmp_path), "-r", "--suffix", "x1"]
    code, _, _ = _run(capsys, *args, "--save-entropy-map")
    assert code == 0 and (tmp_path / "entropy" / "a_x1.png").exists()
    code, _, stderr = _run(capsys, *args, "--skip-existing")
    assert code == 0, stderr
    assert not [name for name in _files(tmp_path) if "_x1_x1" in name]
    code, _, stderr = _run(
        capsys, "-i", str(tmp_path), "-o", str(tmp_path), "--suffix", "x1", "--skip-existing"
    )
    assert "entropy" not in stderr


def test_names_that_differ_only_in_case_follow_the_output_file_system(tmp_path, monkeypatch):
    """IMG.png and img.png are two files on Linux (two outputs), one on macOS/Windows (kept extensions
    cannot separate them there: refused)."""
    import pure.plan

    _image(tmp_path / "in" / "IMG.png")
    _image(tmp_path / "in" / "img.png")
    if not pure.plan.ignores_case(tmp_path):
        plan = plan_outputs(tmp_path / "in", tmp_path / "out")
        assert sorted(job.image.name for job in plan.jobs) == ["IMG.png", "img.png"]
    monkeypatch.setattr(pure.plan, "ignores_case", lambda folder: True)
    with pytest.raises(PlanError, match="would collide even with their extensions kept"):
        plan_outputs(tmp_path / "in", tmp_path / "out2")


@pytest.mark.parametrize("flags", [["-r"], ["--save-entropy-map"]])
def test_a_file_in_an_output_subfolders_place_is_refused_up_front(tmp_path, capsys, stand_in, flags):
    """out/sub (a mirrored subfolder) or out/entropy being a file: refused before the models load, not
    found at each image's write after its restoration (which left a.png and a.json behind while the
    summary said that nothing was written)."""
    _image(tmp_path / "in" / "a.png")
    _image(tmp_path / "in" / "sub" / "b.png")
    blocker = tmp_path / "out" / ("sub" if "-r" in flags else "entropy")
    blocker.parent.mkdir()
    blocker.write_text("")
    code, _, stderr = _run(capsys, "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), *flags)
    assert code == 2 and stand_in.loads == 0, stderr
    assert f"goes into the folder {blocker}, but a file is in its place" in stderr
    assert len(stderr.strip().splitlines()) <= 2  # the line above, and the subfolder not searched
    assert sorted(p.name for p in blocker.parent.iterdir()) == [blocker.name]


@pytest.mark.skipif(sys.platform != "linux", reason="names that are not UTF-8 exist on Linux file systems")
def test_an_output_folder_not_utf8_with_a_strict_stdout(tmp_path, monkeypatch, stand_in):
    """A UTF-8 locale other than C gives stdout the strict error handler: the summary line naming an
    output folder that is not UTF-8 ended the finished run with a UnicodeEncodeError (exit 1)."""
    stdout = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict", write_through=True)
    monkeypatch.setattr(sys, "stdout", stdout)
    image = _image(tmp_path / "a.png")
    output = tmp_path / os.fsdecode(b"out\xff")
    code = infer_main([*TINY, "-i", str(image), "-o", str(output)])
    assert code == 0 and (output / "a.png").exists()
    assert b"1 restored, 0 skipped (output exists), 0 failed; outputs in" in stdout.buffer.getvalue()
    assert b"out\\udcff" in stdout.buffer.getvalue() and stdout.errors == "strict"  # restored after the run


def test_an_input_given_transparency_after_planning_is_not_written_as_jpeg(tmp_path):
    """Planned as an opaque JPEG, then saved with alpha before its turn: writing the planned .jpg dropped
    the alpha while the sidecar said it was re-attached. That input fails in one line, nothing written."""
    from pure.infer import restore_plan

    photo = _image(tmp_path / "in" / "b.jpg")
    _image(tmp_path / "in" / "c.png")
    plan = plan_outputs(tmp_path / "in", tmp_path / "out", outscale=2.0)
    assert [job.image.name for job in plan.jobs] == ["b.jpg", "c.png"]
    Image.new("RGBA", (6, 4), (1, 2, 3, 100)).save(photo, format="PNG")  # a PNG named .jpg: read by content
    summary = restore_plan(plan, StandIn(), {}, progress=False)
    assert summary.restored == 1 and len(summary.failed) == 1 and summary.exit_code() == 1
    assert summary.failed[0].startswith(f"{photo}: has transparency now") and "\n" not in summary.failed[0]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["c.json", "c.png"]


def test_a_link_loop_and_an_input_deleted_after_planning_say_what_they_are(tmp_path):
    """A link loop was 'a link to loop.png, which does not exist'; an input deleted during the run was
    'not a readable image (FileNotFoundError: ...)'."""
    from pure.infer import restore_plan

    _image(tmp_path / "in" / "a.png")
    gone = _image(tmp_path / "in" / "b.png")
    (tmp_path / "in" / "loop.png").symlink_to("loop.png")
    plan = plan_outputs(tmp_path / "in", tmp_path / "out")
    assert plan.failed == [
        f"{tmp_path / 'in' / 'loop.png'}: a link loop (a link to loop.png, which never reaches a file)"
    ]
    gone.unlink()
    summary = restore_plan(plan, StandIn(), {}, progress=False)
    assert summary.failed[-1] == f"{gone}: does not exist (a typo, or moved or deleted since it was listed?)"
    assert summary.restored == 1


def test_a_file_name_with_a_line_break_stays_one_line_in_every_message(tmp_path, capsys, stand_in):
    """Linux allows a newline in a file name: 'failed: in/bad' and 'name.png: not a readable image' were two
    lines of stderr, and the summary line broke in two for such an output folder."""
    folder = tmp_path / "in"
    _image(folder / "good.png")
    (folder / "bad\nname.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    output = tmp_path / "out\rnew"
    code, stdout, stderr = _run(capsys, "-i", str(folder), "-o", str(output))
    assert code == 1 and (output / "good.png").exists()
    assert stderr.splitlines() == [
        f"failed: {folder}/bad\\nname.png: not a readable image (UnidentifiedImageError: cannot identify "
        "image file)",
        "to restore: 1 image(s) at 4x, 1 tile(s) of 256 px (overlap 32 px), one model answer each",
    ]
    assert stdout.splitlines() == [
        f"1 restored, 0 skipped (output exists), 1 failed; outputs in {tmp_path}/out\\rnew"
    ]
    (tmp_path / "a\nfile").write_text("")
    code, _, stderr = _run(capsys, "-i", str(folder), "-o", str(tmp_path / "a\nfile"))
    assert code == 2 and stderr.splitlines() == [
        f"error: -o {tmp_path}/a\\nfile is a file; -o takes a folder (outputs are named after their inputs)"
    ]


def test_a_dangling_link_in_an_outputs_place_is_refused_up_front(tmp_path, capsys, stand_in):
    """out/a.png a link to elsewhere/deep/a.png, which does not exist: it counted as no output, and the
    run wrote through it, making elsewhere/deep/ outside -o (GNU cp refuses to write through one)."""
    _image(tmp_path / "in" / "a.png")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a.png").symlink_to(tmp_path / "elsewhere" / "deep" / "a.png")
    for flags in ([], ["--overwrite"], ["--skip-existing"]):
        code, _, stderr = _run(capsys, "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), *flags)
        assert code == 2 and stand_in.loads == 0, flags
        assert f"is a link to {tmp_path / 'elsewhere' / 'deep' / 'a.png'}, which does not exist" in stderr
    assert not (tmp_path / "elsewhere").exists() and [p.name for p in (tmp_path / "out").iterdir()] == [
        "a.png"
    ]
