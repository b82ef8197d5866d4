"""SR and GT folders paired by file name (pure/pairing.py)."""

from __future__ import annotations

import os
import re

import pytest

from pure import metrics as M
from pure import pairing as P
from tests.fakes import random_image

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may wait on the network


# ----------------------------------------------------------------------------- pairing


def test_pairing_lists_missing_and_extra(tmp_path):
    for name in ("a.png", "b.png", "c.png"):
        random_image(tmp_path / "gt", name)
    for name in ("a.png", "b.jpg", "z.png"):
        random_image(tmp_path / "sr", name)
    (tmp_path / "sr" / "notes.txt").write_text("not an image")
    pairing = P.pair_images(tmp_path / "sr", tmp_path / "gt")
    assert [(sr.name, gt.name) for sr, gt in pairing.pairs] == [("a.png", "a.png"), ("b.jpg", "b.png")]
    assert pairing.missing == ["c.png"] and pairing.extra == ["z.png"]


def test_pairing_with_a_name_pattern_and_without_gt(tmp_path):
    random_image(tmp_path / "gt", "a.png")
    random_image(tmp_path / "sr", "a_out.png")
    pairing = P.pair_images(tmp_path / "sr", tmp_path / "gt", sr_name="{stem}_out")
    assert [(sr.name, gt.name) for sr, gt in pairing.pairs] == [("a_out.png", "a.png")]
    assert P.pair_images(tmp_path / "sr").pairs == [(tmp_path / "sr" / "a_out.png", None)]


def test_an_image_is_never_scored_against_itself(tmp_path):
    """--sr X --gt X scored a perfect 80 dB without a word."""
    random_image(tmp_path / "set", "a.png")
    with pytest.raises(P.EvaluationError, match=r"1 image\(s\) would be scored against themselves .*a\.png"):
        P.pair_images(tmp_path / "set", tmp_path / "set")
    (tmp_path / "link").symlink_to(tmp_path / "set", target_is_directory=True)
    with pytest.raises(P.EvaluationError, match="against themselves"):
        P.pair_images(tmp_path / "link", tmp_path / "set")
    random_image(tmp_path / "set", "a_out.png")  # restorations beside their ground truth: fine
    pairing = P.pair_images(tmp_path / "set", tmp_path / "set", sr_name="{stem}_out")
    assert [(sr.name, gt.name) for sr, gt in pairing.pairs] == [("a_out.png", "a.png")]


def test_subfolders_are_named_or_paired_by_path(tmp_path):
    """Without recursive, subfolders with images are named (never silently left out); with it, images pair
    by their path inside the folders; infer.py's entropy maps are never SR images."""
    for side in ("sr", "gt"):
        for name in ("a.png", "x/a.png", "x/y/b.png"):
            random_image(tmp_path / side / os.path.dirname(name), os.path.basename(name))
    random_image(tmp_path / "sr" / "entropy", "a.png")
    (tmp_path / "gt" / "empty").mkdir()
    flat = P.pair_images(tmp_path / "sr", tmp_path / "gt")
    assert [sr.name for sr, _ in flat.pairs] == ["a.png"] and not flat.missing and not flat.extra
    assert flat.unsearched == [f"{tmp_path / 'sr' / 'x'}/", f"{tmp_path / 'gt' / 'x'}/"]
    deep = P.pair_images(tmp_path / "sr", tmp_path / "gt", recursive=True)
    pairs = [
        (sr.relative_to(tmp_path).as_posix(), gt.relative_to(tmp_path).as_posix()) for sr, gt in deep.pairs
    ]
    assert pairs == [("sr/a.png", "gt/a.png"), ("sr/x/a.png", "gt/x/a.png"), ("sr/x/y/b.png", "gt/x/y/b.png")]
    assert not deep.missing and not deep.extra and not deep.unsearched
    (tmp_path / "gt" / "x" / "y" / "b.png").unlink()
    evaluation = M.evaluate_folders(
        tmp_path / "sr", tmp_path / "gt", metrics=["psnr"], progress=False, recursive=True
    )
    assert evaluation.images == ["a.png", "x/a.png"] and evaluation.extra == ["x/y/b.png"]
    flat_only = tmp_path / "only_sub"
    random_image(flat_only / "x", "a.png")
    with pytest.raises(
        P.EvaluationError, match=r"no images in the SR folder .*; pass --recursive to use those in x/"
    ):
        P.pair_images(flat_only)


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
            random_image(tmp_path / side, name)
    with pytest.raises(P.EvaluationError, match=message.replace("{", r"\{").replace("}", r"\}")):
        P.pair_images(tmp_path / "sr", tmp_path / "gt", **kwargs)


def test_size_mismatch_names_both_files_before_any_metric_loads(tmp_path, monkeypatch):
    """Found from the headers, not after scoring every image before the mismatched one."""
    for name in ("a.png", "b.png"):
        random_image(tmp_path / "gt", name, (32, 32))
    random_image(tmp_path / "sr", "a.png", (32, 32))
    random_image(tmp_path / "sr", "b.png", (40, 32))

    def no_loading(*args, **kwargs):
        raise AssertionError("metrics were loaded before the sizes were checked")

    monkeypatch.setattr(M, "create_metrics", no_loading)
    with pytest.raises(P.EvaluationError, match=r"size mismatch: SR .*b\.png is 40x32 but GT .*32x32"):
        M.evaluate_folders(tmp_path / "sr", tmp_path / "gt", metrics=["psnr"], progress=False)


def test_an_sr_of_the_gt_cut_to_a_multiple_of_the_scale_says_to_crop_the_gt(tmp_path):
    """Set14-style GT of 130x131 px, SR from a tool that made its LR from the GT's top-left 128x128: the line
    said only that sizes must match; it now names the crop (basicsr's mod crop). Any other size keeps it."""
    random_image(tmp_path / "gt", "a.png", (130, 131))
    random_image(tmp_path / "sr", "a.png", (128, 128))
    with pytest.raises(P.EvaluationError) as caught:
        M.evaluate_folders(tmp_path / "sr", tmp_path / "gt", metrics=["psnr"], progress=False)
    assert str(caught.value) == (
        f"size mismatch: SR {tmp_path / 'sr' / 'a.png'} is 128x128 but GT {tmp_path / 'gt' / 'a.png'} is "
        "130x131; if the SR's tool cropped the GT to a multiple of the scale, crop the GT images the same "
        "way (here to their top-left 128x128, as basicsr's mod crop) and score those"
    )
    random_image(tmp_path / "sr", "a.png", (124, 128))
    with pytest.raises(P.EvaluationError, match=r"is 130x131; SR outputs must have the GT's size$"):
        M.evaluate_folders(tmp_path / "sr", tmp_path / "gt", metrics=["psnr"], progress=False)


@pytest.mark.parametrize(
    ("names", "pattern"),
    [
        (["0_out", "1_out"], "{stem}_out"),
        (["x4_0", "x4_1"], "x4_{stem}"),
        (["0_{a}", "1_{a}"], "{stem}_{{a}}"),
    ],
)
def test_unpaired_folders_name_the_sr_name_that_pairs_them(tmp_path, names, pattern):
    for gt, sr in zip(("0", "1"), names, strict=True):
        random_image(tmp_path / "gt", f"{gt}.png", seed=0)
        random_image(tmp_path / "sr", f"{sr}.png", seed=0)
    with pytest.raises(P.EvaluationError, match=rf"pass --sr-name '{re.escape(pattern)}' \(it pairs them\)$"):
        P.pair_images(tmp_path / "sr", tmp_path / "gt")
    assert len(P.pair_images(tmp_path / "sr", tmp_path / "gt", sr_name=pattern).pairs) == 2


def test_names_that_differ_only_in_letter_case_are_named_so(tmp_path):
    """SR CANON_001.PNG for GT Canon_001.png: the line said to check the folders or pass --sr-name, which
    cannot change letter case; it now names both files and the rename."""
    for name in ("Canon_001", "Canon_011"):
        random_image(tmp_path / "gt", f"{name}.png", seed=0)
        random_image(tmp_path / "sr", f"{name.upper()}.PNG", seed=0)
    with pytest.raises(P.EvaluationError) as caught:
        P.pair_images(tmp_path / "sr", tmp_path / "gt")
    assert str(caught.value).endswith(
        "; the names differ only in letter case (CANON_001.PNG in SR, Canon_001.png in GT) and pair exactly: "
        "rename the SR images"
    )


def test_names_no_sr_name_can_pair_are_named_with_the_rename(tmp_path):
    """RealSR's own names (Canon_001_LR4.png restored, Canon_001_HR.png its GT): the line said to pass
    --sr-name, which only adds a prefix or suffix; it now names an SR and a GT file and the rename."""
    random_image(tmp_path / "gt", "Canon_001_HR.png", seed=0)
    random_image(tmp_path / "sr", "Canon_001_LR4.png", seed=0)
    with pytest.raises(P.EvaluationError) as caught:
        P.pair_images(tmp_path / "sr", tmp_path / "gt")
    assert str(caught.value).endswith(
        "; no --sr-name pairs names such as Canon_001_LR4.png (SR) and Canon_001_HR.png (GT): check the "
        "folders, or rename one side so that each SR name is its GT name, with any prefix or suffix"
    )


def test_a_misspelt_metric_names_the_one_meant():
    with pytest.raises(
        P.EvaluationError, match=r"unknown metric\(s\) lpip, pnsr \(did you mean lpips, psnr\?\)"
    ):
        M.select_metrics(["lpip", "PNSR"], has_gt=True)
    assert M.select_metrics(["PSNR", "Lpips"], has_gt=True) == ["psnr", "lpips"]  # any case, as pyiqa's
