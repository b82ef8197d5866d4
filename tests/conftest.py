"""Shared test fixtures: where the reference's golden files are, and small helpers."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.reference import reference_folder

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
HQ_CROP_PX = 128
"""Side of the HR crops the data tests degrade: small enough for the tiny VQ to be fast."""


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    path = reference_folder()
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


@pytest.fixture
def no_weights(tmp_path, monkeypatch):
    """An empty ``$TORCH_HOME`` and Hugging Face cache: every metric's weight file is missing."""
    from huggingface_hub import constants

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    return tmp_path


@pytest.fixture
def broken_package(tmp_path, monkeypatch):
    """``broken_package(name)``: from now on ``import name`` finds a package that raises ImportError, as a
    partial install or one whose own dependency is missing does (``find_spec`` still finds it)."""
    import sys

    def install(name: str) -> None:
        package = tmp_path / "broken" / name
        package.mkdir(parents=True)
        (package / "__init__.py").write_text(f"raise ImportError('{name} lost a dependency')\n")
        for module in [m for m in sys.modules if m == name or m.startswith(f"{name}.")]:
            monkeypatch.delitem(sys.modules, module)
        monkeypatch.syspath_prepend(str(tmp_path / "broken"))

    return install


@pytest.fixture
def hq_crop(shared_data_dir):
    """``hq_crop(name, size)``: the top-left ``size`` px square of a realsr-mini HR image as
    ``[3, size, size]`` float32 in [0, 1] (default: Canon_011, 128 px, small enough for the tiny VQ)."""

    def crop(name: str = "Canon_011_LR4.png", size: int = HQ_CROP_PX) -> torch.Tensor:
        path = shared_data_dir / "realsr-mini" / "hr" / name
        image = Image.open(path).convert("RGB").crop((0, 0, size, size))
        return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1).contiguous()

    return crop


def pytest_collection_modifyitems(config, items):
    """Tests that read the fixture set (``reference_dir``) are marked ``golden``. ``gpu`` tests need a CUDA
    device: skipped, with the reason, where there is none."""
    import torch

    for item in items:
        if "reference_dir" in getattr(item, "fixturenames", ()):
            item.add_marker("golden")
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (run on a GPU machine: python -m pytest -m gpu)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _deterministic_torch():
    torch.manual_seed(0)
    yield
