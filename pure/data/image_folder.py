"""Training examples built directly from a folder of high-quality images.

Each image gives one conversation (:func:`pure.sequence.conversation`):

    HQ = the image resized (shorter side) and centre-cropped to ``size x size``
    LQ = HQ downscaled by ``scale`` then upscaled back to ``size`` (both bicubic)
    [BOS] instruction LQ_BLOCK EOT answer_text HQ_BLOCK EOT     labels: -100 over the user turn

The answer text comes from an optional manifest ``{"image": file name, "description": ...}`` (JSONL or
CSV, as ``scripts/prepare_data.py`` reads them), else
from a fixed placeholder sentence. This is the simple source the trainer owns, for small runs and
tests; the released recipe's Real-ESRGAN degradations, real labels and pre-tokenised shards are the
job of ``scripts/prepare_data.py``. Every image is encoded once, when the dataset is built (by each
training process).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset

from pure.config import ConfigError, TrainDataConfig
from pure.data.captions import read_manifest
from pure.data.datasets import DataError
from pure.data.labels import LEVELS
from pure.errors import from_here, run_from_hint
from pure.files import file_sha256
from pure.images import ImageReadError, is_image_name, read_image, scan_folder
from pure.sequence import TextTokenizer, conversation
from pure.vocab import GRID_PX, Vocab
from pure.vq import VQModel, image_to_tensor


def hq_lq_pair(image: Image.Image, size: int, scale: int) -> tuple[Image.Image, Image.Image]:
    """An RGB image -> (HQ ``size x size`` centre crop, its bicubic x``scale`` down-then-up LQ)."""
    hq = ImageOps.fit(image.convert("RGB"), (size, size), Image.BICUBIC)
    small = hq.resize((size // scale, size // scale), Image.BICUBIC)
    return hq, small.resize((size, size), Image.BICUBIC)


DEGRADATION_SENTENCE = re.compile(rf"({'|'.join(LEVELS)}) blur, ({'|'.join(LEVELS)}) noise\.", re.IGNORECASE)
"""PURE's degradation sentence (:attr:`pure.data.labels.Label.text`), with which an answer opens."""


def check_captions_file(cfg: TrainDataConfig) -> None:
    """Raise :class:`DataError` when ``data.captions`` names a file that does not exist (every example would
    silently get ``data.default_text``)."""
    if cfg.captions and not Path(cfg.captions).is_file():
        raise DataError(
            f"data.captions={from_here(cfg.captions)} "
            f"{'is a folder' if Path(cfg.captions).is_dir() else 'does not exist'}; pass the descriptions "
            "file (.jsonl or .csv), or data.captions= to train on data.default_text"
        )


def hq_images(hq_folder: str, note: Callable[[str], object] = print) -> list[Path]:
    """The image files directly in ``data.hq_folder``, sorted. Subfolders are not searched (as documented;
    ``scripts/prepare_data.py`` does): those holding images are named through ``note``. Raises
    :class:`DataError` for a folder that is missing, a file, or holds no image file.
    """
    folder = Path(hq_folder)
    if folder.exists() and not folder.is_dir():
        raise DataError(
            f"data.hq_folder={hq_folder} is a file; set data.hq_folder to the folder that holds the images"
        )
    if not folder.is_dir():
        raise DataError(
            f"data.hq_folder={from_here(hq_folder)} is not a folder of HQ images: set "
            f"data.hq_folder=DIR{run_from_hint(folder)}"
        )
    files = sorted(p for p in folder.iterdir() if is_image_name(p) and p.is_file())
    # one folder is read, as documented; prepare_data.py searches subfolders, so a note names theirs
    unsearched = [sub.name for sub in scan_folder(folder).subfolders if scan_folder(sub, True).images]
    names = ", ".join(unsearched[:3]) + (", ..." if len(unsearched) > 3 else "")
    below = (
        f"{len(unsearched)} subfolder(s) of it ({names}) hold images, which data.hq_folder does not "
        "search (prepare_data.py does: train on its data.shards)"
    )
    if not files:
        raise DataError(
            f"no images (files of a format Pillow reads) in data.hq_folder={folder}"
            + (f"; {below}, or point data.hq_folder at one of them" if unsearched else "")
        )
    if unsearched:
        note(f"note: data.hq_folder={folder}: {below}")
    return files


class ImageFolderExamples(Dataset):
    """Map-style dataset of ``{"ids": [T] int64, "labels": [T] int64}``, one per usable HQ image.

    Files that cannot be read, and images whose shorter side is below ``data.size`` (they would be
    upscaled into blurry targets), are skipped as ``scripts/prepare_data.py`` skips them: each is said in
    one line through ``note`` and listed in :attr:`skipped`. ``data.max_images`` counts usable images.
    Raises :class:`DataError` when no image is usable.
    """

    def __init__(
        self,
        cfg: TrainDataConfig,
        tokenizer: TextTokenizer,
        vocab: Vocab,
        vq: VQModel,
        note: Callable[[str], object] = print,
    ) -> None:
        if cfg.size % GRID_PX or cfg.size % cfg.scale:
            raise ConfigError(
                f"data.size={cfg.size} must be a multiple of {GRID_PX} and of data.scale={cfg.scale}"
            )
        folder = Path(cfg.hq_folder)
        files = hq_images(cfg.hq_folder, note)
        check_captions_file(cfg)
        # a blank description is none, as in scripts/prepare_data.py: those images train on default_text
        captions = {
            k: v for k, v in (read_manifest(cfg.captions) if cfg.captions else {}).items() if v.strip()
        }
        if cfg.captions and not any(file.name in captions for file in files):  # all the placeholder
            first = f"its first key is {next(iter(captions))!r}" if captions else "it holds no description"
            raise DataError(
                f"data.captions={cfg.captions} describes none of the images in data.hq_folder={folder} "
                f"(its keys are file names in that folder, e.g. {files[0].name!r}; {first}): fix the keys, "
                "or data.captions= to train on data.default_text"
            )
        undescribed = sum(file.name not in captions for file in files) if cfg.captions else 0
        if undescribed:
            note(
                f"note: {undescribed} of {len(files)} images have no description in {cfg.captions}: they "
                "train on data.default_text"
            )
        used = [captions[file.name] for file in files if file.name in captions]
        plain = sum(not DEGRADATION_SENTENCE.match(text.strip()) for text in used)
        if plain:  # e.g. scripts/prepare_data.py's manifest, whose descriptions it completes itself
            note(
                f"note: {plain} of {len(used)} descriptions in {cfg.captions} do not open with PURE's "
                "degradation sentence (e.g. 'Medium blur, small noise.'); here a description is the whole "
                "answer, so the model learns to answer those without one: put the sentence first "
                "(prepare_data.py's manifests hold descriptions only; it prepends the sentence of the "
                "degradation it applies)"
            )
        self.examples: list[dict[str, torch.Tensor]] = []
        self._used: list[tuple[str, str, str]] = []  # (file name, SHA-256 of its bytes, description)
        self.skipped: list[str] = []
        """``path: reason`` of every file left out."""
        for file in files:
            if cfg.max_images and len(self.examples) == cfg.max_images:
                break
            try:
                image = read_image(file).rgb
            except ImageReadError as err:
                reason = str(err)
            else:
                reason = ""
                if min(image.size) < cfg.size:
                    reason = (
                        f"{file}: {image.width}x{image.height} is smaller than data.size={cfg.size} "
                        "(it would be upscaled into a blurry target)"
                    )
            if reason:
                self.skipped.append(reason)
                note(f"warning: skipped {reason}")
                continue
            hq, lq = hq_lq_pair(image, cfg.size, cfg.scale)
            codes = vq.encode(torch.stack([image_to_tensor(lq), image_to_tensor(hq)])).cpu()
            caption = captions.get(file.name, cfg.default_text)
            ids, labels = conversation(tokenizer, vocab, codes[0], caption, codes[1])
            self.examples.append({"ids": ids, "labels": labels})
            self._used.append((file.name, file_sha256(file), caption))
        if not self.examples:
            raise DataError(
                f"no usable image in data.hq_folder={folder}: all {len(files)} were skipped (the first: "
                f"{self.skipped[0]}); add images of at least {cfg.size} px or lower data.size"
            )

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def fingerprint(self) -> str:
        """A hash of what the examples are made of (each used file's name and bytes, and its description;
        not the VQ codes, which may differ in rounding on another device): a resume compares it with the
        checkpoint's to know the data is the same (images replaced, added or removed change it)."""
        return hashlib.sha256(json.dumps(self._used).encode()).hexdigest()[:16]

    @property
    def spans(self) -> list[tuple[int, int]]:
        """``(tokens, prompt tokens)`` of every example."""
        return [(len(e["ids"]), int((e["labels"] < 0).sum())) for e in self.examples]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.examples[index]
