"""Results of an evaluation as files and tables: JSON means, per-image CSV, Markdown tables with
published rows (:func:`load_rows`) for comparison."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pure.errors import from_here
from pure.files import write_text_atomic
from pure.metrics import METRICS, Evaluation, lower_better
from pure.pairing import EvaluationError


def write_json(evaluation: Evaluation, path: str | Path, extra: dict | None = None) -> None:
    """Write the means and run details (:meth:`Evaluation.as_dict`, plus ``extra``) as JSON."""
    write_text_atomic(path, json.dumps({**evaluation.as_dict(), **(extra or {})}, indent=2) + "\n")


def write_csv(evaluation: Evaluation, path: str | Path) -> None:
    """Write one row per image: ``image`` then one column per per-image metric."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["image", *evaluation.scores])
    for i, image in enumerate(evaluation.images):
        writer.writerow([image, *(f"{values[i]:.6f}" for values in evaluation.scores.values())])
    write_text_atomic(path, buffer.getvalue())


@dataclass
class Row:
    """One line of a results table: a method's (or a published paper's) mean scores."""

    name: str
    mean: dict[str, float]
    count: int | None = None
    crop_border: int | None = None
    """The ``--crop-border`` its scores were made with, where its file says (this module's JSON)."""


def _check_row(row: Row, path: Path) -> Row:
    unknown = [m for m in row.mean if m not in METRICS]
    if unknown:
        raise EvaluationError(f"{path}: unknown metric(s) {', '.join(unknown)}; use {', '.join(METRICS)}")
    not_finite = [f"{m}={v}" for m, v in row.mean.items() if not math.isfinite(v)]
    if not_finite:  # "nan" and "inf" parse as floats; a table row of them compares with nothing
        raise EvaluationError(
            f"{path}: row {row.name!r} has {', '.join(not_finite)}; give a number or leave the cell empty"
        )
    return row


def load_rows(path: str | Path) -> list[Row]:
    """Rows of published (or earlier) results from a JSON or CSV file.

    JSON: ``{"rows": [{"name": ..., "mean": {"psnr": ...}, "count": N}, ...]}`` or a
    ``metrics.json`` written by this module. CSV: a ``name`` column, an optional ``count`` column,
    one column per metric (empty cells are skipped).
    """
    path = Path(path)
    if not path.is_file():
        raise EvaluationError(f"compare file not found: {from_here(path)}")
    try:
        if path.suffix.lower() == ".csv":
            with open(path, newline="", encoding="utf-8-sig") as file:
                records = list(csv.DictReader(file))
            rows = [
                Row(
                    r.pop("name"),
                    {k.lower(): float(v) for k, v in r.items() if k != "count" and v},
                    int(r["count"]) if r.get("count") else None,
                )
                for r in records
            ]
        else:
            data = json.loads(path.read_text(encoding="utf-8-sig"))
            records = data["rows"] if "rows" in data else [{"name": data.get("name", path.stem), **data}]
            rows = [
                Row(
                    r["name"],
                    {k.lower(): float(v) for k, v in r["mean"].items()},
                    r.get("count"),
                    r.get("crop_border"),
                )
                for r in records
            ]
    except (KeyError, ValueError, TypeError, AttributeError) as error:
        raise EvaluationError(
            f"cannot read results from {path} ({type(error).__name__}: {error}); expected "
            'JSON {"rows": [{"name": ..., "mean": {"psnr": ...}}]} or CSV with a name column'
        ) from error
    return [_check_row(row, path) for row in rows]


def markdown_table(rows: Sequence[Row], metrics: Sequence[str]) -> str:
    """A Markdown table: one line per ``Row``, one column per metric, headed with its direction."""
    header = ["method", "images"] + [f"{m.upper()} {'↓' if lower_better(m) else '↑'}" for m in metrics]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row.name.replace("|", "\\|"), "–" if row.count is None else str(row.count)]  # | ends a cell
        cells += [f"{row.mean[m]:.4f}" if m in row.mean else "–" for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report(evaluation: Evaluation, compare: Sequence[Row] = ()) -> str:
    """The results table (this run first, then ``compare``) and notes on unavailable metrics and files,
    and the reader's notes on the scored files.

    Columns: the metrics asked for, and any other metric a ``compare`` row has, in ``METRICS`` order.
    """
    rows = [Row(evaluation.name, evaluation.mean, len(evaluation.images)), *compare]
    columns = [m for m in METRICS if m in evaluation.metrics or any(m in row.mean for row in compare)]
    lines = [markdown_table(rows, columns)]
    for metric, reason in evaluation.unavailable.items():
        lines.append(f"- {metric} unavailable: {reason}")
    if evaluation.missing:
        lines.append(
            f"- {len(evaluation.missing)} GT image(s) without an SR image: {', '.join(evaluation.missing)}"
        )
    if evaluation.extra:
        lines.append(
            f"- {len(evaluation.extra)} SR image(s) without a GT image: {', '.join(evaluation.extra)}"
        )
    if evaluation.unsearched:
        lines.append(
            f"- {len(evaluation.unsearched)} subfolder(s) with images not scored: "
            f"{', '.join(evaluation.unsearched)} (pass --recursive to score them too)"
        )
    lines += [f"- note: {note}" for note in evaluation.notes]
    for row in compare:
        if row.crop_border is not None and row.crop_border != evaluation.crop_border:
            lines.append(
                f"- note: {row.name} was scored with --crop-border {row.crop_border}, this run with "
                f"{evaluation.crop_border}: their PSNR/SSIM do not compare"
            )
    return "\n".join(lines)
