"""SR images matched to GT images by file name, and read as tensors for the metrics.

The reader is :func:`pure.images.read_image`, the one inference uses (8-bit sRGB RGB, deep images
rescaled, alpha composited on white), so a metric sees what a restoration saw.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pure.errors import PureError
from pure.images import ImageReadError, is_image_name, read_image

if TYPE_CHECKING:  # torch is imported where it is used, so `evaluate.py --help` stays fast
    import torch


class EvaluationError(PureError, ValueError):
    """A problem with the user's folders, files or arguments; the message says what to do."""


@dataclass
class Pairing:
    """SR images matched to GT images by name; GT images with no SR (``missing``) and the reverse."""

    pairs: list[tuple[Path, Path | None]]
    missing: list[str]
    extra: list[str]


def list_images(folder: Path, role: str) -> dict[str, Path]:
    """Image files directly in ``folder`` by stem (``a.png`` -> ``a``), sorted by name."""
    if folder.exists() and not folder.is_dir():
        raise EvaluationError(f"{role} {folder} is a file; pass the folder that holds the images")
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
    try:
        sr_name.format(stem="")
    except (KeyError, IndexError, ValueError) as err:  # another {field}, {0}, an unpaired brace
        raise EvaluationError(
            f"--sr-name {sr_name!r}: only {{stem}} may stand in braces (e.g. '{{stem}}_out'); {{{{ and }}}} "
            f"write a literal brace ({type(err).__name__}: {err})"
        ) from err
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


def load_image(path: Path) -> torch.Tensor:
    """Read an image with :func:`pure.images.read_image` (the reader inference uses: 8-bit sRGB RGB,
    deep images rescaled, alpha composited on white): ``[3, H, W]`` float32 in [0, 1]."""
    try:
        array = np.asarray(read_image(path).rgb)
    except ImageReadError as error:
        raise EvaluationError(f"{error}; replace or remove it") from error
    import torch

    return torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 255.0
