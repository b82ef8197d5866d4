"""A benchmark run: restore a test set's LR folder, then score the result against its HR folder.

Inference runs in this process (the caller passes it in, :func:`pure.cli.benchmark_main` uses
``scripts/infer.py``'s own code); nothing is started as a subprocess.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from pure.errors import from_here
from pure.images import ImageReadError, is_image_name, read_header, read_image
from pure.metrics import Evaluation, crop_border_error, crops_image_by_image, evaluate_folders, select_metrics
from pure.pairing import EvaluationError, list_images, pair_images
from pure.reports import write_csv, write_json
from pure.tiling import output_size


def benchmark_paths(
    name: str, root: str | Path = "data/benchmarks", run: str | Path | None = None
) -> dict[str, Path]:
    """The folders of benchmark ``name``: ``lr``/``hr`` under ``root/name``; ``run`` (default
    ``runs/<name>/<date-time>``) with ``sr``, ``metrics.json`` and ``per_image.csv`` in it."""
    # NAME is also the run's folder runs/NAME: a path (absolute, or with ..) puts the run into the test set
    if Path(name).name != name or name in (".", ".."):
        raise EvaluationError(
            f"benchmark {name!r} is a path; the name is a test set's folder under --root: pass "
            f"--root {Path(name).parent} {Path(name).name or 'NAME'}"
        )
    base = Path(root) / name
    for sub in ("lr", "hr"):
        if not (base / sub).is_dir():
            sets = sorted(p.parent.name for p in Path(root).glob("*/lr") if (p.parent / "hr").is_dir())
            raise EvaluationError(
                f"benchmark {name!r} needs {from_here(f'{base / sub}/')}: lay it out as {base / 'lr'} and "
                f"{base / 'hr'} (same file names), or pass --root"
                + (f" ({root} holds {', '.join(sets)})" if sets else "")
            )
    run = Path(run) if run else Path("runs") / name / time.strftime("%Y%m%d-%H%M%S")
    if run.exists() and not run.is_dir():
        raise EvaluationError(
            f"--run {run} is a file; pass a folder for the run (its sr/, metrics.json, ...)"
        )
    return {
        "lr": base / "lr",
        "hr": base / "hr",
        "run": run,
        "sr": run / "sr",
        "json": run / "metrics.json",
        "csv": run / "per_image.csv",
    }


def check_scale(
    lr: Path,
    hr: Path,
    outscale: float,
    lr_name: str | None = "{stem}",
    sr_tail: str = "",
    crop_border: int = 0,
) -> None:
    """Raise :class:`EvaluationError` when no LR image pairs with an HR image by name, or when an HR image
    is not its LR image's size times ``outscale`` (as :func:`pure.tiling.output_size` rounds): the
    restorations could never be scored against them. ``lr_name``: the LR name (without suffix) of HR
    ``<stem>``, as ``--sr-name`` pairs the restorations, which keep their LR names (``{stem}x4`` for DIV2K's
    ``0801x4.png``); None: the restorations' names differ from the LR names in a way not known here, and
    only same-named pairs are checked. ``sr_tail``: what the restorations add to the LR names (``_S`` for
    infer.py's ``--suffix S``), named in the advice. ``crop_border``: ``--crop-border`` where a per-image
    metric will cut it off the restorations (0: none), refused when it leaves nothing of an HR image.
    Reads the files' headers (decoding a pair only where those disagree), so it fails in seconds what
    evaluation would find after all the inference."""
    if lr_name is None:
        hr_images = list_images(hr, "HR").images
        pairs = [(p, hr_images[k]) for k, p in list_images(lr, "LR").images.items() if k in hr_images]
    else:
        for folder, role in ((lr, "LR"), (hr, "HR")):  # an empty folder named by its role, not as SR or GT
            list_images(folder, role)
        try:
            pairs = pair_images(lr, hr, lr_name).pairs
        except EvaluationError as err:
            tail = f" (then add {sr_tail!r}, which --suffix adds to the outputs)" if sr_tail else ""
            raise EvaluationError(f"before inference (restorations keep the LR names): {err}{tail}") from err
    for lr_path, hr_path in pairs:
        try:
            lr_size, hr_size = read_header(lr_path).size, read_header(hr_path).size  # upright
            if output_size(*lr_size, outscale) != tuple(hr_size):  # a PNG's late EXIF: decode to be sure
                lr_size, hr_size = (read_image(p).rgb.size for p in (lr_path, hr_path))
        except ImageReadError:
            continue  # inference and evaluation report unreadable files themselves
        expected = output_size(*lr_size, outscale)
        if (
            tuple(hr_size) != expected
            and outscale == int(outscale)
            and expected == tuple(side // int(outscale) * int(outscale) for side in hr_size)
        ):  # the LR was made from the HR cut to a multiple of the scale (as in Set14)
            raise EvaluationError(
                f"{hr_path} is {hr_size[0]}x{hr_size[1]}, not a multiple of --outscale {outscale:g}: its LR "
                f"{lr_path} is {lr_size[0]}x{lr_size[1]}, for {expected[0]}x{expected[1]} HR pixels; "
                f"crop the HR images to a multiple of {outscale:g} (their top-left, as basicsr's mod crop)"
            )
        if tuple(hr_size) != expected:
            raise EvaluationError(
                f"{lr_path} is {lr_size[0]}x{lr_size[1]}: at --outscale {outscale:g} its restoration is "
                f"{expected[0]}x{expected[1]}, but {hr_path} is {hr_size[0]}x{hr_size[1]}; pass "
                f"the test set's scale (--outscale {hr_size[0] / lr_size[0]:g}?)"
            )
        if too_much := crop_border_error(hr_path, hr_size, crop_border):
            raise EvaluationError(f"before inference: {too_much}")


class InferenceFailed(EvaluationError):
    """Inference failed some or all images of the set (its exit 1): the run started, so exit 1 too."""

    exit_code = 1


def run_benchmark(
    name: str,
    root: str | Path = "data/benchmarks",
    run: str | Path | None = None,
    infer: Callable[[Path, Path], int] | None = None,
    outscale: float | None = None,
    lr_name: str | None = "{stem}",
    label: str | None = None,
    **evaluate_kwargs,
) -> tuple[Evaluation, dict[str, Path]]:
    """Super-resolve ``root/name/lr`` into ``run/sr`` with ``infer(lr_dir, sr_dir)`` (in-process; it
    returns an exit code), then evaluate ``run/sr`` against ``root/name/hr`` and write
    ``run/metrics.json`` and ``run/per_image.csv`` (not when no metric could run: earlier results stay).
    Without ``infer`` an existing ``run/sr`` is scored. An interrupted ``infer`` (exit 130) raises
    ``KeyboardInterrupt``. ``outscale``: the scale ``infer`` restores to; the LR images (named as
    ``lr_name`` says, see :func:`check_scale`) must then pair with HR images, each of its LR image's size
    times ``outscale`` (checked before inference). ``label``: the results' row name (default ``name``).
    ``metrics.json`` also records what restored the set (:func:`restored_by`).

    ``evaluate_kwargs`` go to :func:`evaluate_folders`.
    """
    paths = benchmark_paths(name, root, run)
    names = select_metrics(evaluate_kwargs.get("metrics"), has_gt=True)  # fail on a typo before inference
    if infer is not None and outscale is not None:
        sr_name = evaluate_kwargs.get("sr_name", "{stem}")
        tail = sr_name[len(lr_name) :] if lr_name is not None and sr_name.startswith(lr_name) else ""
        crop = evaluate_kwargs.get("crop_border", 0) if crops_image_by_image(names) else 0
        check_scale(paths["lr"], paths["hr"], outscale, lr_name, tail, crop)
    if infer is not None:
        code = infer(paths["lr"], paths["sr"])
        if code == 130:  # inference was interrupted (Ctrl-C or SIGTERM) and said how far it got
            raise KeyboardInterrupt
        if code == 1:  # some or all images failed: a partial set is never scored as the whole
            restored = paths["sr"].is_dir() and any(map(is_image_name, paths["sr"].iterdir()))
            run = paths["run"]
            ways = (
                f"fix or remove them in {paths['lr']}, then rerun with --run {run} --skip-existing (the "
                f"others are kept); or score what was restored with --run {run} --skip-inference"
                if restored
                else f"fix them, then rerun with --run {run}"
            )
            raise InferenceFailed(
                f"inference of {paths['lr']} into {paths['sr']} failed for "
                f"{'some images' if restored else 'every image'} (see above): {ways}"
            )
        if code != 0:
            raise EvaluationError(
                f"inference of {paths['lr']} into {paths['sr']} failed (exit {code}); see above"
            )
    evaluation = evaluate_folders(paths["sr"], paths["hr"], name=label or name, **evaluate_kwargs)
    if not evaluation.mean:  # no metric ran: an earlier run's results stay
        return evaluation, paths
    write_json(
        evaluation,
        paths["json"],
        {"sr": str(paths["sr"]), "gt": str(paths["hr"]), **restored_by(paths["sr"])},
    )
    write_csv(evaluation, paths["csv"])
    return evaluation, paths


def restored_by(sr_dir: Path) -> dict:
    """What restored the images in ``sr_dir``, read from their sidecars (``NAME.json`` beside each output):
    ``model`` (the backbone's revision) and ``adapter``, each one value when every sidecar agrees, else the
    list of the values found, sorted as text (a run continued with ``--skip-existing`` and other settings;
    no adapter stays null); ``{}`` without sidecars. The sidecars, not this run's settings:
    ``--skip-inference`` and ``--skip-existing`` score images that an earlier command restored."""
    found: dict[str, set] = {"model": set(), "adapter": set()}
    for path in sorted(sr_dir.rglob("*.json")):
        try:
            sidecar = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):  # not a sidecar of ours
            continue
        if isinstance(sidecar, dict) and "output" in sidecar:
            for key, values in found.items():
                values.add(sidecar.get(key))
    return {key: next(iter(v)) if len(v) == 1 else sorted(v, key=str) for key, v in found.items() if v}
