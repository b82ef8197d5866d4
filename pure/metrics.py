"""Image-quality metrics over folders paired by file name (:mod:`pure.pairing`), through pyiqa, with
the field's protocol. Tables and files of the results: :mod:`pure.reports`.

The protocol (as in the OSEDiff / SeeSR evaluation scripts): images are read as RGB in [0, 1];
PSNR and SSIM are computed on the Y channel of YCbCr (BT.601, ``Y = 16 + 65.481 R + 128.553 G +
24.966 B`` on [0, 1] RGB, divided by 255) with no border crop by default, through
``pyiqa.create_metric(name, test_y_channel=True, color_space='ycbcr')``. PSNR uses that Y in
[0, 1] unrounded, ``10 log10(1 / (mse + 1e-8))`` (so identical images give 80 dB, not infinity).
SSIM rounds Y*255 to integers (as MATLAB), then an 11x11 Gaussian window (sigma 1.5), 'valid'
filtering, ``C1 = (0.01*255)^2``, ``C2 = (0.03*255)^2``, and pyiqa clamps the contrast-structure
term at 0 before the mean. Every metric is averaged over images; FID compares the two folders.
``crop_border=N`` cuts N pixels off each side of both images before every per-image metric, as
basicsr's ``crop_border`` (classic SR tables use the scale; FID reads the whole images).

pyiqa downloads most metrics' weights on first use. Here nothing is downloaded unless asked:
each metric lists the files it loads (:class:`WeightFile`), and a metric whose files are not on
disk is reported as unavailable with each file's name, folder and URL.

pyiqa and huggingface_hub are imported inside functions: importing pyiqa takes about 6 s (too
long for ``--help``), and ``HF_HUB_OFFLINE`` must be set before huggingface_hub is imported.
"""

from __future__ import annotations

import difflib
import math
import os
import statistics
import tempfile
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pure.images import ImageReadError, read_header, read_image
from pure.pairing import EvaluationError, load_image, pair_images

if TYPE_CHECKING:  # torch is imported where it is used, so `evaluate.py --help` stays fast
    import torch


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
    min_side: int = 0
    """The smallest side in pixels it can score (0: any); pyiqa fails on smaller images."""
    min_side_why: str = ""
    """What sets ``min_side``, for the message (``SSIM's 11 px window``)."""


# The weight files were read off pyiqa 0.1.16's archs/ (default_model_urls, FID_WEIGHTS_URL), timm's
# pretrained configs and torchvision's weight enums; tests/test_metrics.py checks them against those.
METRICS: dict[str, MetricSpec] = {
    "psnr": MetricSpec("psnr", "full", _Y_CHANNEL),
    "ssim": MetricSpec("ssim", "full", _Y_CHANNEL, min_side=11, min_side_why="SSIM's 11 px window"),
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
    "niqe": MetricSpec(
        "niqe",
        "none",
        weights=(_pyiqa_file("niqe_modelparameters.mat"),),
        min_side=96,
        min_side_why="NIQE's 96 px block",
    ),
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


# ----------------------------------------------------------------------------- running metrics


def _load_pair(
    pair: tuple[Path, Path | None], notes: list[str] | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """An (SR, GT) pair as ``[3, H, W]`` tensors in [0, 1] (GT None without one), the reader's notes on
    the files added to ``notes``; :class:`EvaluationError` when their sizes differ."""
    sr_path, gt_path = pair
    sr = load_image(sr_path, notes)
    gt = None if gt_path is None else load_image(gt_path, notes)
    if gt is not None and gt.shape != sr.shape:
        (width, height), (gt_width, gt_height) = sr.shape[:0:-1], gt.shape[:0:-1]
        fix = "SR outputs must have the GT's size"
        # a tool that cut the GT to a multiple of the scale (2x-8x) before making its LR: basicsr's mod crop
        if any((width, height) == (gt_width // s * s, gt_height // s * s) for s in range(2, 9)):
            fix = (
                "if the SR's tool cropped the GT to a multiple of the scale, crop the GT images the "
                f"same way (here to their top-left {width}x{height}, as basicsr's mod crop) and score those"
            )
        raise EvaluationError(
            f"size mismatch: SR {sr_path} is {width}x{height} but GT {gt_path} is "
            f"{gt_width}x{gt_height}; {fix}"
        )
    return sr, gt


def _read_ahead(
    pairs: Sequence[tuple[Path, Path | None]], readers: int, notes: list[str] | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """The pairs' images in order, decoded by ``readers`` threads a few pairs ahead (the reader's notes
    added to ``notes``, in the order the files were read).

    Decoding PNGs takes most of a GPU run's time; PIL releases the GIL while it decodes.
    """
    with ThreadPoolExecutor(readers) as pool:
        ahead: deque[Future] = deque()
        for pair in pairs:
            ahead.append(pool.submit(_load_pair, pair, notes))
            if len(ahead) > 2 * readers:
                yield ahead.popleft().result()
        while ahead:
            yield ahead.popleft().result()


def _batches(
    pairs: Sequence[tuple[Path, Path | None]], batch_size: int, notes: list[str] | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor | None, list[Path]]]:
    """Consecutive pairs stacked into ``[B, 3, H, W]`` batches of one image size each, with their SR paths
    (the reader's notes added to ``notes``)."""
    batch: list[tuple[torch.Tensor, torch.Tensor | None]] = []
    paths: list[Path] = []
    images = _read_ahead(pairs, min(8, os.cpu_count() or 1), notes)
    for (path, _), (sr, gt) in zip(pairs, images, strict=True):
        if batch and (len(batch) == batch_size or batch[0][0].shape != sr.shape):
            yield *_stack(batch), paths
            batch, paths = [], []
        batch.append((sr, gt))
        paths.append(path)
    if batch:
        yield *_stack(batch), paths


def _stack(batch: list[tuple[torch.Tensor, torch.Tensor | None]]) -> tuple[torch.Tensor, torch.Tensor | None]:
    import torch

    sr = torch.stack([s for s, _ in batch])
    return sr, None if batch[0][1] is None else torch.stack([g for _, g in batch])


def missing_weights(metric: str) -> list[WeightFile]:
    """The files ``metric`` loads that are not on disk (empty: it runs offline)."""
    return [weight for weight in METRICS[metric].weights if not weight.present()]


def _damaged(spec: MetricSpec) -> str:
    """For a metric pyiqa could not create, which files to fetch ('' if none): those still missing (with
    ``--download``, a download that failed, e.g. without a network) and those on disk (maybe damaged)."""
    missing = [w for w in spec.weights if not w.present()]
    files = [w for w in spec.weights if w not in missing]
    parts = []
    if missing:
        where = "; ".join(w.instruction() for w in missing)
        parts.append(f"; if the download failed (no network?), put {where}")
    if files:
        where = "; ".join(w.instruction() for w in files)
        again = "; if a file it loads is damaged (an interrupted download?), put it there again: "
        parts.append(again + where)
    return "".join(parts)


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
            why = " ".join(str(error).split())  # one line
            unavailable[name] = f"pyiqa could not create it: {type(error).__name__}: {why}" + _damaged(spec)
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
    unsearched: list[str] = field(default_factory=list)
    """Subfolders holding images that were not scored (without ``recursive``)."""
    crop_border: int = 0
    """Pixels cut off each side of both images before the per-image metrics."""
    notes: list[str] = field(default_factory=list)
    """The reader's notes on the scored files, one line each naming the file (e.g. an embedded colour
    profile that could not be applied: the image was read as sRGB)."""

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
            "notes": self.notes,
            "crop_border": self.crop_border,
            "protocol": "pyiqa; RGB in [0, 1]; psnr/ssim on Y of YCbCr (BT.601); "
            + (f"{self.crop_border} px cut off each side" if self.crop_border else "no border crop")
            + "; means over images; fid folder to folder (clean mode)",
        }


def select_metrics(metrics: Sequence[str] | None, has_gt: bool) -> list[str]:
    """Check metric names, in any case (``PSNR``, as pyiqa takes them); ``None`` is the default set (without
    GT, its no-reference part)."""
    if metrics is None:
        return [m for m in DEFAULT_METRICS if has_gt or METRICS[m].reference == "none"]
    metrics = [m.lower() for m in metrics]
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        meant = [close[0] for m in unknown if (close := difflib.get_close_matches(m.lower(), METRICS, n=1))]
        hint = f" (did you mean {', '.join(meant)}?)" if meant else ""
        raise EvaluationError(
            f"unknown metric(s) {', '.join(unknown)}{hint}; choose from {', '.join(METRICS)}"
        )
    needs_gt = [m for m in metrics if METRICS[m].reference != "none"]
    if needs_gt and not has_gt:
        raise EvaluationError(f"{', '.join(needs_gt)} need(s) ground truth: pass --gt DIR or drop them")
    return list(dict.fromkeys(metrics))


def crops_image_by_image(names: Sequence[str]) -> bool:
    """Whether ``crop_border`` applies to any of the metrics ``names``: the per-image ones (FID reads whole
    images)."""
    return any(METRICS[m].reference != "set" for m in names)


def crop_border_error(path: Path, size: tuple[int, int], crop_border: int) -> str | None:
    """Why ``crop_border`` px cut off each side leave nothing of the image at ``path`` of ``size`` (W, H);
    None when something is left."""
    if min(size) > 2 * crop_border:
        return None
    return (
        f"--crop-border {crop_border} cuts all of {path} ({size[0]}x{size[1]} px) away; pass a smaller "
        "--crop-border"
    )


def _check_headers(
    pairs: Sequence[tuple[Path, Path | None]], names: Sequence[str], crop_border: int = 0
) -> dict[str, str]:
    """Check every pair from the files' headers, before any metric loads or scores.

    Returns, for each of ``names`` that cannot score these pairs (an SR image under its
    :attr:`MetricSpec.min_side` once ``crop_border`` is cut off each side), why: the first such image,
    its size and the limit. Raises :class:`EvaluationError` for an image that ``crop_border`` would cut
    away entirely, or an SR image whose size is not its GT's, when a per-image metric of
    ``names`` pairs them (FID alone compares sets of any sizes; decoding the pair to be sure where the
    headers disagree: a PNG may state its orientation after them), and
    :class:`~pure.images.ImageReadError` for a file that cannot be read: found in seconds instead of
    after scoring the images before it."""
    limits = {m: METRICS[m] for m in names if METRICS[m].min_side}
    reasons: dict[str, str] = {}
    paired = crops_image_by_image(names)  # scored image by image: same sizes
    for sr, gt in pairs:
        width, height = read_header(sr).size
        if gt is not None and paired and read_header(gt).size != (width, height):
            _load_pair((sr, gt))  # raises for a real mismatch
        if paired and (too_much := crop_border_error(sr, (width, height), crop_border)):
            raise EvaluationError(too_much)
        if crop_border:
            width, height = width - 2 * crop_border, height - 2 * crop_border
            shown = f"{width}x{height} px (after --crop-border {crop_border})"
        else:
            shown = f"{width}x{height} px"
        for metric, spec in limits.items():
            if metric not in reasons and min(width, height) < spec.min_side:
                reasons[metric] = f"{sr}: {shown} is smaller than {spec.min_side_why}"
    return reasons


def _score(
    metric: str, model: torch.nn.Module, sr: torch.Tensor, gt: torch.Tensor | None, paths: list[Path]
) -> tuple[list[float], str | None]:
    """``metric``'s scores of one batch, and why they cannot be used (None when they can): pyiqa failed
    on an image (a constant image's NIQE fails inside pyiqa), or gave NaN or infinity for one. The image
    is named; after a failure on a batch the images are tried one by one to find it (when each scores
    alone, as after running out of memory on the batch, those scores are used)."""
    try:
        out = model(sr, gt) if METRICS[metric].reference == "full" else model(sr)
    except Exception as error:  # pyiqa's errors have many types; each is one line here
        if len(paths) > 1:
            values = []
            for i, path in enumerate(paths):
                one, why = _score(metric, model, sr[i : i + 1], None if gt is None else gt[i : i + 1], [path])
                if why:
                    return [], why
                values += one
            return values, None
        first = (str(error).splitlines() or [""])[0]
        return [], f"pyiqa failed on {paths[0]} ({type(error).__name__}: {first})"
    values = out.detach().flatten().double().cpu().tolist()
    for path, value in zip(paths, values, strict=True):
        if not math.isfinite(value):
            return values, f"pyiqa gave {value} for {path}"
    return values, None


def folder_name(folder: str | Path) -> str:
    """The name a results row (and ``runs/eval/NAME``) takes from the scored folder: its own name even when
    given as ``.``, ``..`` or ``sr/`` (resolved first); ``root`` for the file system's root."""
    return Path(folder).resolve().name or "root"


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
    recursive: bool = False,
    crop_border: int = 0,
) -> Evaluation:
    """Score the SR images in ``sr_dir`` (against same-named GT images in ``gt_dir``, if given; with
    ``recursive`` also those in subfolders, paired by their path: see :func:`pure.pairing.pair_images`).
    ``crop_border``: pixels cut off each side of both images before every per-image metric (basicsr's
    ``crop_border``; FID reads the whole images); ValueError when negative.

    Per-image metrics run in batches of up to ``batch_size`` same-size images on ``device``.
    Metrics that cannot run are listed in ``Evaluation.unavailable``: missing weights; an image under the
    metric's :attr:`MetricSpec.min_side` (SSIM 11 px, NIQE 96 px; unless ``metrics`` names it, which raises
    :class:`EvaluationError` before scoring); a failure or a NaN/infinite score on an image (its partial
    scores are dropped: a mean over some images would not compare with another method's).
    """
    from tqdm import tqdm

    if crop_border < 0:
        raise ValueError(f"crop_border must be at least 0, got {crop_border}")
    names = select_metrics(metrics, gt_dir is not None)
    pairing = pair_images(Path(sr_dir), None if gt_dir is None else Path(gt_dir), sr_name, recursive)
    runnable = [m for m in names if download or not missing_weights(m)]  # the others: missing weights
    too_small = _check_headers(pairing.pairs, runnable, crop_border)
    for metric, why in too_small.items():
        if metrics is not None:  # named: the user must choose
            raise EvaluationError(f"{why}; leave {metric} out of --metrics")
    models, unavailable = create_metrics([m for m in names if m not in too_small], device, download)
    unavailable.update(too_small)  # in the default list: skipped like any metric that cannot run
    per_image = {m: model for m, model in models.items() if METRICS[m].reference != "set"}
    scores: dict[str, list[float]] = {m: [] for m in per_image}
    notes: list[str] = []
    with tqdm(total=len(pairing.pairs), desc="metrics", unit="img", disable=not progress) as bar:
        for sr, gt, paths in _batches(pairing.pairs, batch_size, notes) if per_image else ():
            if crop_border:  # [B, 3, H, W]
                c = crop_border
                sr, gt = sr[..., c:-c, c:-c], None if gt is None else gt[..., c:-c, c:-c]
            sr = sr.to(device)
            gt = None if gt is None else gt.to(device)
            for metric, model in list(per_image.items()):
                values, why = _score(metric, model, sr, gt, paths)
                if why:  # this metric is dropped, the others go on
                    unavailable[metric] = why
                    del per_image[metric], scores[metric], models[metric]
                    continue
                scores[metric].extend(values)
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
        name=name or folder_name(sr_dir),
        metrics=names,
        images=[sr.relative_to(sr_dir).as_posix() for sr, _ in pairing.pairs],
        scores=scores,
        mean=mean,
        unavailable={m: unavailable[m] for m in names if m in unavailable},
        missing=pairing.missing,
        extra=pairing.extra,
        unsearched=pairing.unsearched,
        crop_border=crop_border,
        notes=list(dict.fromkeys(notes)),
    )


def weights_report() -> str:
    """Each metric and whether its weight files are on disk (if not, where they go)."""
    lines = []
    for metric in METRICS:
        missing = missing_weights(metric)
        status = "ready" if not missing else "missing " + "; ".join(w.instruction() for w in missing)
        lines.append(f"{metric:13} {status}")
    return "\n".join(lines)
