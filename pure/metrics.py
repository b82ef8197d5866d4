"""Image-quality metrics over folders paired by file name, through pyiqa, with the field's protocol.

The protocol (as in the OSEDiff / SeeSR evaluation scripts): images are read as RGB in [0, 1];
PSNR and SSIM are computed on the Y channel of YCbCr (BT.601, ``Y = 16 + 65.481 R + 128.553 G +
24.966 B`` on [0, 1] RGB, divided by 255) with no border crop, through
``pyiqa.create_metric(name, test_y_channel=True, color_space='ycbcr')``. PSNR uses that Y in
[0, 1] unrounded, ``10 log10(1 / (mse + 1e-8))`` (so identical images give 80 dB, not infinity).
SSIM rounds Y*255 to integers (as MATLAB), then an 11x11 Gaussian window (sigma 1.5), 'valid'
filtering, ``C1 = (0.01*255)^2``, ``C2 = (0.03*255)^2``, and pyiqa clamps the contrast-structure
term at 0 before the mean. Every metric is averaged over images; FID compares the two folders.

pyiqa downloads most metrics' weights on first use. Here nothing is downloaded unless asked:
each metric lists the files it loads (:class:`WeightFile`), and a metric whose files are not on
disk is reported as unavailable with each file's name, folder and URL.

pyiqa and huggingface_hub are imported inside functions: importing pyiqa takes about 6 s (too
long for ``--help``), and ``HF_HUB_OFFLINE`` must be set before huggingface_hub is imported.
"""

from __future__ import annotations

import csv
import io
import json
import os
import statistics
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pure.files import write_text_atomic
from pure.images import ImageReadError, is_image_name, read_image

if TYPE_CHECKING:  # torch is imported where it is used, so `evaluate.py --help` stays fast
    import torch


class EvaluationError(ValueError):
    """A problem with the user's folders, files or arguments; the message says what to do."""


@dataclass(frozen=True)
class WeightFile:
    """One file a metric loads, which pyiqa (or torchvision, timm, CLIP) downloads on first use.

    ``store`` names where it is looked for: ``pyiqa``, ``checkpoints`` or ``clip`` (folders under
    ``torch.hub.get_dir()``, i.e. ``$TORCH_HOME/hub``, by default ``~/.cache/torch/hub``), or
    ``hf:<repo>`` (that Hugging Face repository in the Hugging Face cache).
    """

    name: str
    store: str
    url: str

    def folder(self) -> Path:
        """The folder the file must be in for pyiqa to load it without a download."""
        if self.store.startswith("hf:"):
            from huggingface_hub import constants

            return Path(constants.HF_HUB_CACHE) / ("models--" + self.store[3:].replace("/", "--"))
        import torch

        return Path(torch.hub.get_dir()) / self.store

    def present(self) -> bool:
        """Whether the file is on disk (never touches the network)."""
        if self.store.startswith("hf:"):
            from huggingface_hub import try_to_load_from_cache

            return isinstance(try_to_load_from_cache(self.store[3:], self.name), str)
        return (self.folder() / self.name).is_file()

    def instruction(self) -> str:
        """Where to put the file, and where to get it."""
        if self.store.startswith("hf:"):
            repo = self.store[3:]
            return (
                f"{self.name} of Hugging Face repo {repo} in the Hugging Face cache {self.folder()}/ "
                f"(on a machine with internet run `hf download {repo} {self.name}`, then copy "
                f"{self.folder().name}/ into {self.folder().parent}/)"
            )
        return f"{self.name} into {self.folder()}/ (from {self.url})"


def _pyiqa_file(name: str) -> WeightFile:
    return WeightFile(
        name, "pyiqa", f"https://huggingface.co/chaofengc/IQA-PyTorch-Weights/resolve/main/{name}"
    )


def _torchvision_file(name: str) -> WeightFile:
    return WeightFile(name, "checkpoints", f"https://download.pytorch.org/models/{name}")


def _timm_file(repo: str) -> WeightFile:
    return WeightFile(
        "model.safetensors", f"hf:{repo}", f"https://huggingface.co/{repo}/resolve/main/model.safetensors"
    )


_CLIP_RN50 = WeightFile(
    "RN50.pt",
    "clip",
    "https://openaipublic.azureedge.net/clip/models/"
    "afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762/RN50.pt",
)
_Y_CHANNEL = {"test_y_channel": True, "color_space": "ycbcr"}


@dataclass(frozen=True)
class MetricSpec:
    """How one metric is computed: its pyiqa name and options, what it compares, the files it loads.

    ``reference``: ``full`` (SR against GT, per image), ``none`` (SR alone, per image) or ``set``
    (the SR folder against the GT folder as distributions: FID).
    """

    pyiqa_name: str
    reference: str
    options: dict = field(default_factory=dict)
    weights: tuple[WeightFile, ...] = ()


# The weight files were read off pyiqa 0.1.16's archs/ (default_model_urls, FID_WEIGHTS_URL), timm's
# pretrained configs and torchvision's weight enums; tests/test_metrics.py checks them against those.
METRICS: dict[str, MetricSpec] = {
    "psnr": MetricSpec("psnr", "full", _Y_CHANNEL),
    "ssim": MetricSpec("ssim", "full", _Y_CHANNEL),
    "lpips": MetricSpec(
        "lpips",
        "full",
        weights=(_pyiqa_file("LPIPS_v0.1_alex-df73285e.pth"), _torchvision_file("alexnet-owt-7be5be79.pth")),
    ),
    "dists": MetricSpec(
        "dists",
        "full",
        weights=(_pyiqa_file("DISTS_weights-f5e65c96.pth"), _torchvision_file("vgg16-397923af.pth")),
    ),
    "fid": MetricSpec("fid", "set", weights=(_pyiqa_file("pt_inception-2015-12-05-6726825d.pth"),)),
    "niqe": MetricSpec("niqe", "none", weights=(_pyiqa_file("niqe_modelparameters.mat"),)),
    "musiq": MetricSpec("musiq", "none", weights=(_pyiqa_file("musiq_koniq_ckpt-e95806b9.pth"),)),
    "maniqa-pipal": MetricSpec(
        "maniqa-pipal",
        "none",
        weights=(
            _pyiqa_file("MANIQA_PIPAL-ae6d356b.pth"),
            _timm_file("timm/vit_base_patch8_224.augreg2_in21k_ft_in1k"),
        ),
    ),
    "maniqa": MetricSpec(
        "maniqa",
        "none",
        weights=(
            _pyiqa_file("ckpt_koniq10k.pt"),
            _timm_file("timm/vit_base_patch8_224.augreg2_in21k_ft_in1k"),
        ),
    ),
    "clipiqa": MetricSpec("clipiqa", "none", weights=(_CLIP_RN50,)),
    "topiq_nr": MetricSpec(
        "topiq_nr",
        "none",
        weights=(_pyiqa_file("cfanet_nr_koniq_res50-9a73138b.pth"), _timm_file("timm/resnet50.a1_in1k")),
    ),
}
DEFAULT_METRICS = tuple("psnr ssim lpips dists fid niqe musiq maniqa-pipal clipiqa topiq_nr".split())


def lower_better(metric: str) -> bool:
    """The metric's direction, as pyiqa declares it (``lower_better`` in its default configs)."""
    from pyiqa.default_model_configs import DEFAULT_CONFIGS

    return bool(DEFAULT_CONFIGS[METRICS[metric].pyiqa_name].get("lower_better", False))


# ----------------------------------------------------------------------------- pairing


@dataclass
class Pairing:
    """SR images matched to GT images by name; GT images with no SR (``missing``) and the reverse."""

    pairs: list[tuple[Path, Path | None]]
    missing: list[str]
    extra: list[str]


def list_images(folder: Path, role: str) -> dict[str, Path]:
    """Image files directly in ``folder`` by stem (``a.png`` -> ``a``), sorted by name."""
    if not folder.is_dir():
        raise EvaluationError(f"{role} folder not found: {folder} (pass an existing folder of images)")
    images = {}
    for path in sorted(folder.iterdir()):
        if is_image_name(path) and path.is_file():
            if path.stem in images:
                raise EvaluationError(
                    f"two {role} images share the name {path.stem!r}: {images[path.stem].name} and "
                    f"{path.name} in {folder}; keep one"
                )
            images[path.stem] = path
    if not images:
        raise EvaluationError(
            f"no images in the {role} folder {folder} (files of a format Pillow reads: .png, .jpg, .tif, ...)"
        )
    return images


def pair_images(sr_dir: Path, gt_dir: Path | None = None, sr_name: str = "{stem}") -> Pairing:
    """Match each GT image ``<stem>.*`` to the SR image named ``sr_name.format(stem=<stem>)`` + any suffix.

    ``sr_name`` such as ``"{stem}_out"`` matches outputs that carry a suffix. Without ``gt_dir``
    every SR image is returned unpaired. Extensions may differ (``a.png`` against ``a.jpg``).
    """
    if "{stem}" not in sr_name:
        raise EvaluationError(f"--sr-name {sr_name!r} must contain {{stem}}, e.g. '{{stem}}_out'")
    sr = list_images(Path(sr_dir), "SR")
    if gt_dir is None:
        return Pairing([(path, None) for path in sr.values()], [], [])
    pairs, missing, used = [], [], set()
    for stem, gt_path in list_images(Path(gt_dir), "GT").items():
        key = sr_name.format(stem=stem)
        if key in sr:
            pairs.append((sr[key], gt_path))
            used.add(key)
        else:
            missing.append(gt_path.name)
    extra = [path.name for key, path in sr.items() if key not in used]
    if not pairs:
        raise EvaluationError(
            f"no SR image in {sr_dir} matches a GT image in {gt_dir} by name (SR names expected as "
            f"{sr_name!r} + suffix); check the folders or pass --sr-name"
        )
    return Pairing(pairs, missing, extra)


# ----------------------------------------------------------------------------- running metrics


def load_image(path: Path) -> torch.Tensor:
    """Read an image with :func:`pure.images.read_image` (the reader inference uses: 8-bit sRGB RGB,
    deep images rescaled, alpha composited on white): ``[3, H, W]`` float32 in [0, 1]."""
    try:
        array = np.asarray(read_image(path).rgb)
    except ImageReadError as error:
        raise EvaluationError(f"{error}; replace or remove it") from error
    import torch

    return torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 255.0


def _load_pair(pair: tuple[Path, Path | None]) -> tuple[torch.Tensor, torch.Tensor | None]:
    sr_path, gt_path = pair
    sr = load_image(sr_path)
    gt = None if gt_path is None else load_image(gt_path)
    if gt is not None and gt.shape != sr.shape:
        raise EvaluationError(
            f"size mismatch: SR {sr_path} is {sr.shape[2]}x{sr.shape[1]} but GT {gt_path} is "
            f"{gt.shape[2]}x{gt.shape[1]}; SR outputs must have the GT's size"
        )
    return sr, gt


def _read_ahead(
    pairs: Sequence[tuple[Path, Path | None]], readers: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """The pairs' images in order, decoded by ``readers`` threads a few pairs ahead.

    Decoding PNGs takes most of a GPU run's time; PIL releases the GIL while it decodes.
    """
    with ThreadPoolExecutor(readers) as pool:
        ahead: deque[Future] = deque()
        for pair in pairs:
            ahead.append(pool.submit(_load_pair, pair))
            if len(ahead) > 2 * readers:
                yield ahead.popleft().result()
        while ahead:
            yield ahead.popleft().result()


def _batches(
    pairs: Sequence[tuple[Path, Path | None]], batch_size: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """Consecutive pairs stacked into ``[B, 3, H, W]`` batches of one image size each."""
    batch: list[tuple[torch.Tensor, torch.Tensor | None]] = []
    for sr, gt in _read_ahead(pairs, readers=min(8, os.cpu_count() or 1)):
        if batch and (len(batch) == batch_size or batch[0][0].shape != sr.shape):
            yield _stack(batch)
            batch = []
        batch.append((sr, gt))
    if batch:
        yield _stack(batch)


def _stack(batch: list[tuple[torch.Tensor, torch.Tensor | None]]) -> tuple[torch.Tensor, torch.Tensor | None]:
    import torch

    sr = torch.stack([s for s, _ in batch])
    return sr, None if batch[0][1] is None else torch.stack([g for _, g in batch])


def missing_weights(metric: str) -> list[WeightFile]:
    """The files ``metric`` loads that are not on disk (empty: it runs offline)."""
    return [weight for weight in METRICS[metric].weights if not weight.present()]


def create_metrics(
    names: Sequence[str], device: str | torch.device, download: bool = False
) -> tuple[dict[str, torch.nn.Module], dict[str, str]]:
    """Build the pyiqa metrics that can run; return them and, for the others, why not.

    Without ``download``, a metric whose weight files are missing is not created (pyiqa would try
    to download them) and its reason lists each file with its folder and URL.
    """
    import pyiqa
    import torch

    metrics, unavailable = {}, {}
    for name in names:
        missing = [] if download else missing_weights(name)
        if missing:
            unavailable[name] = "missing weights: put " + "; ".join(w.instruction() for w in missing)
            continue
        spec = METRICS[name]
        try:
            metrics[name] = pyiqa.create_metric(spec.pyiqa_name, device=torch.device(device), **spec.options)
        except Exception as error:  # any failure makes only this metric unavailable
            unavailable[name] = f"pyiqa could not create it: {type(error).__name__}: {error}"
    return metrics, unavailable


def folder_fid(metric: torch.nn.Module, pairs: Sequence[tuple[Path, Path | None]], batch_size: int) -> float:
    """FID between the paired SR images and their GT images (pyiqa's clean-fid, folder to folder).

    Only the paired files are compared: they are read with :func:`pure.images.read_image` (as every
    other metric reads them) and written as PNGs into two temporary folders first.
    """
    with tempfile.TemporaryDirectory(prefix="pure-fid-") as tmp:
        folders = [Path(tmp, "sr"), Path(tmp, "gt")]
        for side, folder in enumerate(folders):
            folder.mkdir()
            for index, pair in enumerate(pairs):
                try:
                    read_image(pair[side]).rgb.save(folder / f"{index:06d}.png")
                except ImageReadError as error:
                    raise EvaluationError(f"{error}; replace or remove it") from error
        score = metric(str(folders[0]), str(folders[1]), num_workers=0, batch_size=batch_size, verbose=False)
    return float(score)


@dataclass
class Evaluation:
    """Scores of one SR folder: per image (``scores[metric][i]`` for ``images[i]``) and means.

    ``metrics`` lists every metric asked for, ``unavailable`` why some of them did not run.
    """

    name: str
    metrics: list[str]
    images: list[str]
    scores: dict[str, list[float]]
    mean: dict[str, float]
    unavailable: dict[str, str]
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        """The JSON summary: ``{"mean": {...}, "count": N, "lower_better": {...}, ...}``."""
        return {
            "name": self.name,
            "metrics": self.metrics,
            "mean": self.mean,
            "count": len(self.images),
            "lower_better": {metric: lower_better(metric) for metric in self.mean},
            "unavailable": self.unavailable,
            "missing": self.missing,
            "extra": self.extra,
            "protocol": "pyiqa; RGB in [0, 1]; psnr/ssim on Y of YCbCr (BT.601), no border crop; "
            "means over images; fid folder to folder (clean mode)",
        }


def select_metrics(metrics: Sequence[str] | None, has_gt: bool) -> list[str]:
    """Check metric names; ``None`` is the default set (without GT, its no-reference part)."""
    if metrics is None:
        return [m for m in DEFAULT_METRICS if has_gt or METRICS[m].reference == "none"]
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise EvaluationError(f"unknown metric(s) {', '.join(unknown)}; choose from {', '.join(METRICS)}")
    needs_gt = [m for m in metrics if METRICS[m].reference != "none"]
    if needs_gt and not has_gt:
        raise EvaluationError(f"{', '.join(needs_gt)} need(s) ground truth: pass --gt DIR or drop them")
    return list(dict.fromkeys(metrics))


def evaluate_folders(
    sr_dir: str | Path,
    gt_dir: str | Path | None = None,
    metrics: Sequence[str] | None = None,
    sr_name: str = "{stem}",
    device: str | torch.device = "cpu",
    batch_size: int = 8,
    download: bool = False,
    progress: bool = True,
    name: str | None = None,
) -> Evaluation:
    """Score the SR images in ``sr_dir`` (against same-named GT images in ``gt_dir``, if given).

    Per-image metrics run in batches of up to ``batch_size`` same-size images on ``device``.
    Metrics that cannot run (missing weights) are listed in ``Evaluation.unavailable``.
    """
    from tqdm import tqdm

    names = select_metrics(metrics, gt_dir is not None)
    pairing = pair_images(Path(sr_dir), None if gt_dir is None else Path(gt_dir), sr_name)
    models, unavailable = create_metrics(names, device, download)
    per_image = {m: model for m, model in models.items() if METRICS[m].reference != "set"}
    scores: dict[str, list[float]] = {m: [] for m in per_image}
    with tqdm(total=len(pairing.pairs), desc="metrics", unit="img", disable=not progress) as bar:
        for sr, gt in _batches(pairing.pairs, batch_size) if per_image else ():
            sr = sr.to(device)
            gt = None if gt is None else gt.to(device)
            for metric, model in per_image.items():
                out = model(sr, gt) if METRICS[metric].reference == "full" else model(sr)
                scores[metric].extend(out.detach().flatten().double().cpu().tolist())
            bar.update(sr.shape[0])
    mean = {m: statistics.fmean(values) for m, values in scores.items()}
    for metric, model in models.items():
        if METRICS[metric].reference == "set":
            if len(pairing.pairs) < 2:
                unavailable[metric] = "needs at least 2 image pairs"
            else:
                mean[metric] = folder_fid(model, pairing.pairs, batch_size)
    mean = {m: mean[m] for m in names if m in mean}
    return Evaluation(
        name=name or Path(sr_dir).name,
        metrics=names,
        images=[sr.name for sr, _ in pairing.pairs],
        scores=scores,
        mean=mean,
        unavailable={m: unavailable[m] for m in names if m in unavailable},
        missing=pairing.missing,
        extra=pairing.extra,
    )


# ----------------------------------------------------------------------------- outputs


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


def _check_row(row: Row, path: Path) -> Row:
    unknown = [m for m in row.mean if m not in METRICS]
    if unknown:
        raise EvaluationError(f"{path}: unknown metric(s) {', '.join(unknown)}; use {', '.join(METRICS)}")
    return row


def load_rows(path: str | Path) -> list[Row]:
    """Rows of published (or earlier) results from a JSON or CSV file.

    JSON: ``{"rows": [{"name": ..., "mean": {"psnr": ...}, "count": N}, ...]}`` or a
    ``metrics.json`` written by this module. CSV: a ``name`` column, an optional ``count`` column,
    one column per metric (empty cells are skipped).
    """
    path = Path(path)
    if not path.is_file():
        raise EvaluationError(f"compare file not found: {path}")
    try:
        if path.suffix.lower() == ".csv":
            with open(path, newline="", encoding="utf-8") as file:
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
            data = json.loads(path.read_text(encoding="utf-8"))
            records = data["rows"] if "rows" in data else [{"name": data.get("name", path.stem), **data}]
            rows = [
                Row(r["name"], {k.lower(): float(v) for k, v in r["mean"].items()}, r.get("count"))
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
        cells = [row.name, "–" if row.count is None else str(row.count)]
        cells += [f"{row.mean[m]:.4f}" if m in row.mean else "–" for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report(evaluation: Evaluation, compare: Sequence[Row] = ()) -> str:
    """The results table (this run first, then ``compare``) and notes on unavailable metrics and files.

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
    return "\n".join(lines)


# ----------------------------------------------------------------------------- benchmark


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
    ``run/metrics.json`` and ``run/per_image.csv``. Without ``infer`` an existing ``run/sr`` is scored.

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
    write_json(evaluation, paths["json"], {"sr": str(paths["sr"]), "gt": str(paths["hr"])})
    write_csv(evaluation, paths["csv"])
    return evaluation, paths


def weights_report() -> str:
    """Each metric and whether its weight files are on disk (if not, where they go)."""
    lines = []
    for metric in METRICS:
        missing = missing_weights(metric)
        status = "ready" if not missing else "missing " + "; ".join(w.instruction() for w in missing)
        lines.append(f"{metric:13} {status}")
    return "\n".join(lines)
