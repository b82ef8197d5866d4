"""Results as files and tables (pure/reports.py): JSON, CSV, Markdown, compare files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pure import metrics as M
from pure import pairing as P
from pure import reports as R

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may wait on the network
ROOT = Path(__file__).resolve().parents[1]


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
    assert R.load_rows(tmp_path / "metrics.json") == [R.Row("run", {"psnr": 25.0, "ssim": 0.6}, 2, 0)]
    (tmp_path / "table.csv").write_text("name,count,PSNR,niqe\nother,100,24.5,\n")
    assert R.load_rows(tmp_path / "table.csv") == [R.Row("other", {"psnr": 24.5}, 100)]
    (tmp_path / "bad.json").write_text('{"rows": [{"name": "x", "mean": {"sharpness": 1}}]}')
    with pytest.raises(P.EvaluationError, match=r"bad\.json: unknown metric\(s\) sharpness"):
        R.load_rows(tmp_path / "bad.json")
    (tmp_path / "bad.csv").write_text("method,psnr\nx,1\n")
    with pytest.raises(P.EvaluationError, match=r"cannot read results from .*bad\.csv"):
        R.load_rows(tmp_path / "bad.csv")


def test_a_compare_row_scored_with_another_crop_border_is_noted(tmp_path):
    """An earlier run of ours scored with --crop-border 4 beside this one's (none): a note under the table
    says their PSNR/SSIM do not compare; published rows, whose files do not say, get none."""
    earlier = M.Evaluation(**{**_evaluation().__dict__, "name": "earlier", "crop_border": 4})
    R.write_json(earlier, tmp_path / "metrics.json")
    rows = R.load_rows(tmp_path / "metrics.json") + R.load_rows(ROOT / "data" / "published" / "pure_x4.json")
    notes = [line for line in R.report(_evaluation(), rows).splitlines() if "crop-border" in line]
    assert notes == [
        "- note: earlier was scored with --crop-border 4, this run with 0: their PSNR/SSIM do not compare"
    ]


def test_a_compare_row_of_nan_or_inf_is_refused_naming_it(tmp_path):
    """``nan`` and ``inf`` parse as floats, so they went into the table as values."""
    (tmp_path / "table.csv").write_text("name,psnr,ssim\nother,nan,0.5\n")
    with pytest.raises(P.EvaluationError, match=r"table\.csv: row 'other' has psnr=nan; give a number"):
        R.load_rows(tmp_path / "table.csv")
    (tmp_path / "rows.json").write_text('{"rows": [{"name": "x", "mean": {"lpips": "inf"}}]}')
    with pytest.raises(P.EvaluationError, match=r"rows\.json: row 'x' has lpips=inf;"):
        R.load_rows(tmp_path / "rows.json")


def test_a_compare_csv_saved_by_excel_is_read(tmp_path):
    (tmp_path / "excel.csv").write_bytes(b"\xef\xbb\xbfname,psnr\r\nMine,24.1\r\n")
    assert R.load_rows(tmp_path / "excel.csv") == [R.Row("Mine", {"psnr": 24.1}, None)]
