"""Where the reference's golden fixtures are, and what they name: read when tests are collected."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"


def reference_folder() -> Path | None:
    """``$PURE_REFERENCE_DIR`` or ``../shared/reference`` (the golden fixtures), if present."""
    path = Path(os.environ.get("PURE_REFERENCE_DIR", SHARED / "reference"))
    return path if path.is_dir() else None


def fixture_names(relative: str, section: str | None, public: list[str]) -> list[str]:
    """The names a golden fixture's JSON lists (its top-level keys, or those of ``section``), so that another
    fixture set (``$PURE_REFERENCE_DIR``: other seeds and inputs in the same formats) is tested whole,
    whatever it names its images; ``public`` (the shared set's names) without fixtures (the tests skip)."""
    folder = reference_folder()
    if folder is None or not (folder / relative).is_file():
        return public
    listed = json.loads((folder / relative).read_text())
    return list(listed[section] if section else listed)


def require(folder: Path, *relative: str) -> Path:
    """``folder`` if it holds each of ``relative`` (files of the fixture set), else the test skips naming the
    first one missing: another set (``$PURE_REFERENCE_DIR``) may hold only some of the sub-fixtures."""
    for name in relative:
        if not (folder / name).is_file():
            pytest.skip(f"golden fixture {folder / name} not found: this fixture set lacks it")
    return folder
