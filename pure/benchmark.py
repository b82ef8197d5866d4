"""A benchmark run: restore a test set's LR folder, then score the result against its HR folder.

Inference runs in this process (the caller passes it in, :func:`pure.cli.benchmark_main` uses
``scripts/infer.py``'s own code); nothing is started as a subprocess.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from pure.metrics import Evaluation, evaluate_folders, select_metrics
from pure.pairing import EvaluationError
from pure.reports import write_csv, write_json


def benchmark_paths(
    name: str, root: str | Path = "data/benchmarks", run: str | Path | None = None
) -> dict[str, Path]:
    """The folders of benchmark ``name``: ``lr``/``hr`` under ``root/name``; ``run`` (default
    ``runs/<name>/<date-time>``) with ``sr``, ``metrics.json`` and ``per_image.csv`` in it."""
    base = Path(root) / name
    for sub in ("lr", "hr"):
        if not (base / sub).is_dir():
            raise EvaluationError(
                f"benchmark {name!r} needs {base / sub}/: lay it out as {root}/{name}/lr and "
                f"{root}/{name}/hr (same file names), or pass --root"
            )
    run = Path(run) if run else Path("runs") / name / time.strftime("%Y%m%d-%H%M%S")
    return {
        "lr": base / "lr",
        "hr": base / "hr",
        "run": run,
        "sr": run / "sr",
        "json": run / "metrics.json",
        "csv": run / "per_image.csv",
    }


def run_benchmark(
    name: str,
    root: str | Path = "data/benchmarks",
    run: str | Path | None = None,
    infer: Callable[[Path, Path], int] | None = None,
    **evaluate_kwargs,
) -> tuple[Evaluation, dict[str, Path]]:
    """Super-resolve ``root/name/lr`` into ``run/sr`` with ``infer(lr_dir, sr_dir)`` (in-process; it
    returns an exit code), then evaluate ``run/sr`` against ``root/name/hr`` and write
    ``run/metrics.json`` and ``run/per_image.csv`` (not when no metric could run: earlier results stay).
    Without ``infer`` an existing ``run/sr`` is scored.

    ``evaluate_kwargs`` go to :func:`evaluate_folders`.
    """
    paths = benchmark_paths(name, root, run)
    select_metrics(evaluate_kwargs.get("metrics"), has_gt=True)  # fail on a typo before inference
    if infer is not None:
        code = infer(paths["lr"], paths["sr"])
        if code != 0:
            raise EvaluationError(
                f"inference of {paths['lr']} into {paths['sr']} failed (exit {code}); see above"
            )
    evaluation = evaluate_folders(paths["sr"], paths["hr"], name=name, **evaluate_kwargs)
    if not evaluation.mean:  # no metric ran: an earlier run's results stay
        return evaluation, paths
    write_json(evaluation, paths["json"], {"sr": str(paths["sr"]), "gt": str(paths["hr"])})
    write_csv(evaluation, paths["csv"])
    return evaluation, paths
