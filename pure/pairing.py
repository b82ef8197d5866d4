"""SR images matched to GT images by file name, and read as tensors for the metrics.

The reader is :func:`pure.images.read_image`, the one inference uses (8-bit sRGB RGB, deep images
rescaled, alpha composited on white), so a metric sees what a restoration saw.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pure.errors import PureError, from_here
from pure.images import ImageReadError, read_image, scan_folder
from pure.plan import ENTROPY_FOLDER

if TYPE_CHECKING:  # torch is imported where it is used, so `evaluate.py --help` stays fast
    import torch


class EvaluationError(PureError, ValueError):
    """A problem with the user's folders, files or arguments; the message says what to do."""


@dataclass
class Pairing:
    """SR images matched to GT images by name; GT images with no SR (``missing``) and the reverse, as paths
    relative to their folder; subfolders holding images that were not searched (``unsearched``)."""

    pairs: list[tuple[Path, Path | None]]
    missing: list[str]
    extra: list[str]
    unsearched: list[str] = field(default_factory=list)


@dataclass
class Listing:
    """A folder's images by key (the path inside the folder without its suffix: ``sub/a`` for
    ``sub/a.png``), and the subfolders with images that were not searched (without ``recursive``)."""

    images: dict[str, Path]
    unsearched: list[Path]


def list_images(folder: Path, role: str, recursive: bool = False, exclude: tuple[Path, ...] = ()) -> Listing:
    """Image files in ``folder`` (with ``recursive`` also in its subfolders, except hidden ones and
    ``exclude``), by key, sorted. Raises :class:`EvaluationError` for a missing folder, two images with one
    key (``a.png`` and ``a.jpg``), or no image at all."""
    if folder.exists() and not folder.is_dir():
        raise EvaluationError(f"{role} {folder} is a file; pass the folder that holds the images")
    if not folder.is_dir():
        raise EvaluationError(
            f"{role} folder not found: {from_here(folder)}; pass an existing folder of images"
        )
    scan = scan_folder(folder, recursive, exclude)
    images: dict[str, Path] = {}
    for path in scan.images:
        if not path.is_file():  # a broken link
            continue
        key = path.relative_to(folder).with_suffix("").as_posix()
        if key in images:
            raise EvaluationError(
                f"two {role} images share the name {key!r}: {images[key].relative_to(folder)} and "
                f"{path.relative_to(folder)} in {folder}; keep one"
            )
        images[key] = path
    unsearched = [sub for sub in scan.subfolders if scan_folder(sub, True, exclude).images]
    if not images:
        hint = f"; pass --recursive to use those in {_names(unsearched)}" if unsearched else ""
        raise EvaluationError(
            f"no images in the {role} folder {folder} (files of a format Pillow reads: .png, .jpg, .tif, ...)"
            + hint
        )
    return Listing(dict(sorted(images.items())), unsearched)


def _names(folders: list[Path], shown: int = 3) -> str:
    names = [f"{folder.name}/" for folder in folders[:shown]]
    return ", ".join(names) + (f" and {len(folders) - shown} more" if len(folders) > shown else "")


def pair_images(
    sr_dir: Path, gt_dir: Path | None = None, sr_name: str = "{stem}", recursive: bool = False
) -> Pairing:
    """Match each GT image ``<stem>.*`` to the SR image named ``sr_name.format(stem=<stem>)`` + any suffix.

    ``sr_name`` such as ``"{stem}_out"`` matches outputs that carry a suffix. Without ``gt_dir``
    every SR image is returned unpaired. Extensions may differ (``a.png`` against ``a.jpg``). With
    ``recursive``, subfolders count too and images pair by their path (``sr/x/a.png`` with
    ``gt/x/a.jpg``, ``<stem>`` then being ``x/a``); infer.py's entropy maps (``sr/entropy/``) are left out.
    Raises :class:`EvaluationError` when nothing pairs, or when a file would pair with itself.
    """
    try:
        sr_name.format(stem="")
    except (KeyError, IndexError, ValueError) as err:  # another {field}, {0}, an unpaired brace
        raise EvaluationError(
            f"--sr-name {sr_name!r}: only {{stem}} may stand in braces (e.g. '{{stem}}_out'); {{{{ and }}}} "
            f"write a literal brace ({type(err).__name__}: {err})"
        ) from err
    if "{stem}" not in sr_name:
        raise EvaluationError(f"--sr-name {sr_name!r} must contain {{stem}}, e.g. '{{stem}}_out'")
    sr_dir = Path(sr_dir)
    sr_listing = list_images(sr_dir, "SR", recursive, exclude=(sr_dir / ENTROPY_FOLDER,))
    sr, unsearched = sr_listing.images, [f"{folder}/" for folder in sr_listing.unsearched]
    if gt_dir is None:
        return Pairing([(path, None) for path in sr.values()], [], [], unsearched)
    gt_listing = list_images(Path(gt_dir), "GT", recursive)
    unsearched += [f"{folder}/" for folder in gt_listing.unsearched]
    pairs, missing, used = [], [], set()
    for stem, gt_path in gt_listing.images.items():
        key = sr_name.format(stem=stem)
        if key in sr:
            pairs.append((sr[key], gt_path))
            used.add(key)
        else:
            missing.append(gt_path.relative_to(gt_dir).as_posix())
    extra = [path.relative_to(sr_dir).as_posix() for key, path in sr.items() if key not in used]
    if not pairs:
        guess = _guess_sr_name(list(sr), list(gt_listing.images))
        folded = {key.casefold(): path for key, path in sr.items()}
        case = [
            (folded[key], path)
            for stem, path in gt_listing.images.items()
            if (key := sr_name.format(stem=stem).casefold()) in folded
        ]
        if guess:
            fix = f"pass --sr-name '{guess}' (it pairs them)"
        elif case:  # CANON_001.PNG for Canon_001.png: no --sr-name changes letter case
            fix = (
                f"the names differ only in letter case ({case[0][0].relative_to(sr_dir).as_posix()} in SR, "
                f"{case[0][1].relative_to(gt_dir).as_posix()} in GT) and pair exactly: rename the SR images"
            )
        else:  # e.g. RealSR's own names, Canon_001_LR4.png for Canon_001_HR.png: no --sr-name pairs them
            first_sr, first_gt = next(iter(sr.values())), next(iter(gt_listing.images.values()))
            fix = (
                f"no --sr-name pairs names such as {first_sr.relative_to(sr_dir).as_posix()} (SR) and "
                f"{first_gt.relative_to(gt_dir).as_posix()} (GT): check the folders, or rename one side so "
                "that each SR name is its GT name, with any prefix or suffix"
            )
        raise EvaluationError(
            f"no SR image in {sr_dir} matches a GT image in {gt_dir} by name (SR names expected as "
            f"{sr_name!r} + suffix); {fix}"
        )
    itself = [sr_path for sr_path, gt_path in pairs if sr_path.resolve() == gt_path.resolve()]
    if itself:  # a perfect score that measures nothing
        raise EvaluationError(
            f"{len(itself)} image(s) would be scored against themselves ({itself[0]}): --sr and --gt name "
            "the same files; pass the restorations' folder as --sr and the ground truth's as --gt"
        )
    return Pairing(pairs, missing, extra, unsearched)


def _guess_sr_name(sr_keys: list[str], gt_stems: list[str]) -> str | None:
    """The ``--sr-name`` pattern (``{stem}_out``, ``x4_{stem}``) that pairs the most SR names with GT
    stems, from what SR names add before or after a GT stem (as ``infer.py --suffix`` does); None if
    none pairs any. Looks at the first 50 SR names only (an error path: it must stay quick)."""
    patterns = set()
    for key in sr_keys[:50]:
        for stem in gt_stems:
            if key != stem and key.startswith(stem):
                patterns.add("{stem}" + key[len(stem) :].replace("{", "{{").replace("}", "}}"))
            if key != stem and key.endswith(stem):
                patterns.add(key[: -len(stem)].replace("{", "{{").replace("}", "}}") + "{stem}")
    keys = set(sr_keys)
    paired = {p: sum(p.format(stem=stem) in keys for stem in gt_stems) for p in sorted(patterns)}
    best = max(paired, key=paired.get, default=None)
    return best if best is not None and paired[best] else None


def load_image(path: Path, notes: list[str] | None = None) -> torch.Tensor:
    """Read an image with :func:`pure.images.read_image` (the reader inference uses: 8-bit sRGB RGB,
    deep images rescaled, alpha composited on white): ``[3, H, W]`` float32 in [0, 1]. The reader's notes
    on the file (an embedded colour profile ignored, damaged metadata) are added to ``notes``."""
    try:
        read = read_image(path)
    except ImageReadError as error:
        raise EvaluationError(f"{error}; replace or remove it") from error
    if notes is not None:
        notes.extend(read.notes)
    array = np.asarray(read.rgb)
    import torch

    return torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 255.0
