"""Writing files so that an interruption never leaves half of one: temporary file, then rename."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
"""File suffixes read as images when a folder is listed (lower case)."""


def write_atomic(path: str | Path, write: Callable[[Path], object]) -> None:
    """Call ``write(temporary path)`` beside ``path``, then rename the result over ``path``.

    The temporary file is hidden (a leading dot), keeps ``path``'s suffix (so writers that pick a
    format from it still work), and is removed if ``write`` fails.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(handle)
    try:
        write(Path(temp))
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    write_atomic(path, lambda temp: temp.write_text(text, encoding="utf-8"))
