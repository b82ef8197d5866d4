"""Content descriptions of HQ images: a manifest, filled in by a captioning model when one is named.

A manifest maps images to descriptions, keyed by the image's path relative to its HQ folder
(``sub/dir/name.png``), in one of two formats:

    manifest.jsonl    {"image": "Canon_001_LR4.png", "description": "A red brick building ..."}
    manifest.csv      image,description  (a header row, then one row per image)

With ``caption.model`` set, images missing from the manifest are described by that model (any
image-text-to-text model transformers loads from a hub id or a local folder: LLaVA-1.5 as in the
paper, BLIP, Florence-2, ...) in batches, and every finished batch is appended to the manifest at
once, so an interrupted or repeated run only describes what is still missing. Each image is
described whole, before cropping, so one description serves any crop settings.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from pure.config import CaptionConfig
from pure.errors import PureError, error_reason, one_line
from pure.images import ImageReadError, read_image

Captioner = Callable[[list[Image.Image]], list[str]]
"""Describes a batch of RGB images, one string each."""


class ManifestError(PureError, ValueError):
    """A manifest file cannot be read."""


class CaptionerError(PureError, ValueError):
    """The captioning model ``caption.model`` cannot be loaded."""


class MissingDescriptionsError(PureError, ValueError):
    """Some images have no description and label-free training was not allowed; one line naming them."""

    def __init__(self, message: str) -> None:
        super().__init__(one_line(message))


def read_manifest(path: str | Path) -> dict[str, str]:
    """Image key -> description from a ``.jsonl`` or ``.csv`` manifest ({} when the file does not exist).

    Later entries win, so appending a corrected line overrides an earlier one.
    """
    path = Path(path)
    if not path.is_file():
        return {}
    try:  # utf-8-sig: Excel's "CSV UTF-8" starts with a byte-order mark
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ManifestError(
            f"{path} is not UTF-8 text ({err.reason} at byte {err.start}); save it as UTF-8 (in Excel: "
            "CSV UTF-8)"
        ) from err
    if path.suffix.lower() == ".csv":
        with io.StringIO(text, newline="") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or not {"image", "description"} <= set(reader.fieldnames):
                raise ManifestError(
                    f"{path}: a CSV manifest needs a header row with columns image,description"
                )
            entries = {}
            for row in reader:
                if not any(isinstance(cell, str) and cell.strip() for cell in row.values()):
                    continue  # a line of spaces (csv skips only empty ones)
                if row["description"] is None:  # a short row: csv gives None, never to be stored as 'None'
                    raise ManifestError(
                        f"{path}:{reader.line_num}: expected image,description, got only "
                        f"{row['image']!r}; add its description (or a comma for none)"
                    )
                if any(cell.strip() for cell in row.get(None, ())):  # an unquoted comma: the rest is lost
                    raise ManifestError(
                        f"{path}:{reader.line_num}: more cells than the header has columns; put "
                        'a description that holds commas in double quotes ("A cat, asleep.")'
                    )
                entries[row["image"]] = row["description"]
            return entries
    if path.suffix.lower() != ".jsonl":
        raise ManifestError(f"{path}: a manifest must be a .jsonl or .csv file")
    entries = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            if not isinstance(item["description"], str):
                raise TypeError(f"the description is {type(item['description']).__name__}, not text")
            entries[str(item["image"])] = item["description"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ManifestError(
                f'{path}:{number}: expected {{"image": ..., "description": ...}}, got {line[:80]!r} ({err})'
            ) from err
    return entries


def append_manifest(path: str | Path, entries: Mapping[str, str]) -> None:
    """Append ``entries`` to a ``.jsonl`` or ``.csv`` manifest, creating it (and a CSV header) if needed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.is_file() or path.stat().st_size == 0
    if not new:  # a file saved without a final newline: the first entry would join its last line
        with path.open("rb") as f:
            f.seek(-1, 2)
            unterminated = f.read(1) not in (b"\n", b"\r")
    with path.open("a", newline="", encoding="utf-8") as f:
        if not new and unterminated:
            f.write("\r\n" if path.suffix.lower() == ".csv" else "\n")
        if path.suffix.lower() == ".csv":
            writer = csv.writer(f)
            if new:
                writer.writerow(["image", "description"])
            writer.writerows(entries.items())
        else:
            f.writelines(
                json.dumps({"image": k, "description": v}, ensure_ascii=False) + "\n"
                for k, v in entries.items()
            )


def load_captioner(cfg: CaptionConfig, device: str = "cpu") -> Captioner:
    """A batched :data:`Captioner` around transformers' image-text-to-text pipeline for ``cfg.model``.

    Models whose processor has a chat template (LLaVA, Qwen-VL, ...) get ``cfg.prompt`` as a user
    message next to the image; others (BLIP, ...) get it as the text their caption continues.
    """
    from transformers import pipeline

    try:
        pipe = pipeline("image-text-to-text", model=cfg.model, device=device)
    except Exception as err:  # missing files, unknown architectures and hub errors have many types
        raise CaptionerError(
            f"cannot load the captioning model {cfg.model!r} ({error_reason(err, 300)}); set "
            "caption.model to a local folder of an image-text-to-text model (offline, download it first with "
            "scripts/download.py MODELS_DIR REPO_ID) or a hub id, or fill caption.manifest"
        ) from err
    chat = getattr(pipe.processor, "chat_template", None) is not None
    kwargs = {"max_new_tokens": cfg.max_new_tokens, "return_full_text": False, "batch_size": cfg.batch_size}

    def describe(images: list[Image.Image]) -> list[str]:
        if chat:
            messages = [
                [
                    {
                        "role": "user",
                        "content": [{"type": "image", "image": image}, {"type": "text", "text": cfg.prompt}],
                    }
                ]
                for image in images
            ]
            outputs = pipe(text=messages, **kwargs)
        else:
            outputs = pipe(images=images, text=[cfg.prompt] * len(images), **kwargs)
        return [(out[0] if isinstance(out, list) else out)["generated_text"].strip() for out in outputs]

    return describe


def describe_missing(
    images: Mapping[str, Path],
    manifest: str | Path,
    captioner: Captioner,
    batch_size: int,
    progress: bool = True,
) -> dict[str, str]:
    """Describe the ``images`` (key -> file) that ``manifest`` lacks, appending each batch to it.

    Returns the new descriptions. Empty answers are not stored (those images stay missing), and an
    unreadable image is left out with a warning.
    """
    done = read_manifest(manifest)
    todo = [key for key in images if key not in done]
    new: dict[str, str] = {}
    bar = tqdm(total=len(todo), desc="describing", unit="img", disable=not progress or not todo)
    for start in range(0, len(todo), batch_size):
        keys, batch = [], []
        for key in todo[start : start + batch_size]:
            try:
                batch.append(read_image(images[key]).rgb)
                keys.append(key)
            except ImageReadError as err:
                tqdm.write(f"warning: cannot describe {images[key]}: {err}")
        answers = captioner(batch) if batch else []
        found = {key: text for key, text in zip(keys, answers, strict=True) if text}
        if found:
            append_manifest(manifest, found)
            new.update(found)
        bar.update(len(todo[start : start + batch_size]))
    bar.close()
    return new


def check_descriptions(keys: Sequence[str], descriptions: Mapping[str, str], cfg: CaptionConfig) -> None:
    """Raise :class:`MissingDescriptionsError` listing ``keys`` without a description (unless allowed)."""
    missing = [key for key in keys if not (descriptions.get(key) or "").strip()]  # blank = none
    if not missing or cfg.allow_missing:
        return
    shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
    where = cfg.manifest or "(no caption.manifest set)"
    raise MissingDescriptionsError(
        f"{len(missing)} image(s) have no description in {where} ({shown}); "
        + _near_keys(missing, [k for k in descriptions if k not in set(keys)])
        + "add them to the manifest (keys are paths relative to their HQ folder), set caption.model to a "
        "captioning model that describes them, or set caption.allow_missing=true to train those images "
        "with the degradation sentence alone."
    )


def _near_keys(missing: Sequence[str], unused: Sequence[str]) -> str:
    """A clause naming manifest keys that match no image but would match a missing one if written as the
    manifest wants (relative to the HQ folder, ``/`` separators, the file's own case); empty if none."""

    def plain(key: str) -> str:
        return key.replace("\\", "/").removeprefix("./").lower()

    pairs = []
    for key in unused:
        near = [m for m in missing if plain(key) == m.lower() or plain(key).endswith("/" + m.lower())]
        if near:
            pairs.append(f"{key!r} (for {near[0]})")
    if not pairs:
        return ""
    more = f" and {len(pairs) - 3} more" if len(pairs) > 3 else ""
    return (
        f"the manifest names {', '.join(pairs[:3])}{more}: write each key as the image's path relative to "
        "its HQ folder, as on disk; "
    )
