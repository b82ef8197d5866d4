"""The one base class of the errors a user can fix.

Every error that means "this file, setting or folder is wrong, and here is what to do" derives
from :class:`PureError`: a bad setting (:class:`pure.config.ConfigError`), a missing or broken
checkpoint, an unreadable image, a bad folder layout, ... Each command in :mod:`pure.cli` catches
it once and prints its message as one line (exit code 2); anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import importlib
import os
import re
from pathlib import Path


class PureError(Exception):
    """A mistake the user can fix; the message names the file or setting and the fix."""


class DiskFullError(PureError, OSError):
    """A write failed because the disk (or quota) is full: the work stopped part-way, so the command exits
    1 (it had started), not 2; the message names the folder and how to continue."""

    exit_code = 1


class WorkerDiedError(PureError, RuntimeError):
    """A data-loader worker process died (killed for memory, or out of shared memory: Docker gives a
    container 64 MB of /dev/shm). torch raises a RuntimeError with a traceback; this is its one line with
    the fix (exit 1: the work had started)."""

    exit_code = 1


def worker_died(err: BaseException, setting: str, now: int, then: str) -> WorkerDiedError | None:
    """:class:`WorkerDiedError` for torch's error of a data-loader worker that died, naming the worker
    count ``setting`` (its value ``now``) and ``then`` (how to continue); None for any other error."""
    text = str(err)
    fragments = ("exited unexpectedly", "is killed by signal", "shared memory")
    if not (
        isinstance(err, RuntimeError) and "DataLoader worker" in text and any(f in text for f in fragments)
    ):
        return None
    return WorkerDiedError(
        f"a data-loader worker process died ({error_reason(err, 160)}): it ran out of memory or of shared "
        f"memory (/dev/shm; Docker's default is 64 MB): set {setting} lower (now {now}; 0 loads in the main "
        f"process) or give the container more (docker run --shm-size 8g), then {then}"
    )


_CONTROL_ESCAPES = {code: repr(chr(code))[1:-1] for code in (*range(0x20), 0x7F, 0x85, 0x2028, 0x2029)}


def one_line(text: str) -> str:
    """``text`` with every control character and line separator written as its escape (a newline as
    ``\\n``): a file name may hold any of them on Linux (all bytes but ``/`` and NUL), and a message that
    names such a file must still be one line."""
    return text.translate(_CONTROL_ESCAPES)


def error_reason(err: BaseException, limit: int = 200) -> str:
    """``"Type: message"`` of a library's exception for a one-line message: its text folded onto one line
    (huggingface_hub, transformers, peft and YAML write several) and cut to ``limit`` characters."""
    return f"{type(err).__name__}: {' '.join(str(err).split())[:limit]}"


def torch_load_reason(err: BaseException) -> str:
    """The first line of ``torch.load(weights_only=True)``'s error for a one-line message, without its
    advice about ``weights_only`` (which does not apply: a VQ checkpoint or an adapter's ``.bin`` holds
    tensors only) or a bare number (what unpickling garbage reports). A file that pickles objects besides
    tensors (a whole model, numpy numbers) names the first one: torch's own first line ("Weights only load
    failed. This file can still be loaded, to do so you have two options," with terminal bold codes) names
    neither the object nor the options."""
    text = str(err)
    if found := re.search(r"Unsupported global: GLOBAL ([\w.]+)", text):
        return f"it holds {found[1]} besides tensors, which is not unpickled: save its state dict alone"
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if "weights_only" in first or "weights only" in first.lower() or not first or first.isdigit():
        return f"{type(err).__name__}: not a PyTorch file of tensors"
    return first


def from_here(path: str | Path) -> str:
    """``path`` for a message; a relative one adds where it was looked for (settings' paths are read from
    the current folder, not from the config file's: ``../shared/data`` in a config works only from the
    folder it was written for)."""
    if Path(path).is_absolute():
        return str(path)
    return f"{path} (relative to the current folder {Path.cwd()})"


def broken_links(paths: list[Path]) -> str | None:
    """``'a -> t, ...'`` for those of ``paths`` that are symbolic links to nothing, else None. A Hugging Face
    cache's snapshot holds links into its ``blobs/`` folder: copied without it (or read where its links do
    not resolve, e.g. a network share written from another system), every file is listed but none opens."""
    broken = [f"{p.name} -> {os.readlink(p)}" for p in paths if p.is_symlink() and not p.exists()]
    if not broken:
        return None
    return ", ".join(broken[:3]) + (f" (and {len(broken) - 3} more)" if len(broken) > 3 else "")


LINKS_FIX = "copy it with the links followed (cp -rL, rsync -L)"


def run_from_hint(path: str | Path) -> str:
    """For a settings path not found: ``", or run from the folder the config's paths are relative to"`` when
    ``path`` is relative (read from the current folder, see :func:`from_here`); empty for an absolute one,
    which no other current folder would find."""
    return "" if Path(path).is_absolute() else ", or run from the folder the config's paths are relative to"


def require(module: str, needed: str, install: str) -> None:
    """Import the optional package ``module`` or raise :class:`PureError` as ``"{needed}: {install}"``.
    A package that is there but does not import (a partial or broken install, a dependency of its own
    missing) is refused too, with its reason: checking only that it is there let the web demo load its
    models and end in a traceback, and training ask for wandb and run without it (accelerate drops a
    tracker it cannot import with a warning)."""
    try:
        importlib.import_module(module)
    except ImportError as err:
        absent = isinstance(err, ModuleNotFoundError) and err.name == module
        reason = "" if absent else f" ({module} is installed but does not import: {one_line(str(err))})"
        raise PureError(f"{needed}: {install}{reason}") from err
