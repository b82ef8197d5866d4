"""Shared test fixtures: where the reference's golden files are, and small helpers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def _reference_dir() -> Path | None:
    """``$PURE_REFERENCE_DIR`` or ``../shared/reference`` (the golden fixtures), if present."""
    path = Path(os.environ.get("PURE_REFERENCE_DIR", SHARED / "reference"))
    return path if path.is_dir() else None


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    path = _reference_dir()
    if path is None:
        pytest.skip("golden fixtures not found: set PURE_REFERENCE_DIR or place them at ../shared/reference")
    return path


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """``../shared/data`` (real test images); the project's own ``data/`` samples otherwise."""
    path = Path(os.environ.get("PURE_SHARED_DATA", SHARED / "data"))
    if not path.is_dir():
        pytest.skip("real test images not found: set PURE_SHARED_DATA or place them at ../shared/data")
    return path


@pytest.fixture(autouse=True)
def _deterministic_torch():
    torch.manual_seed(0)
    yield
