"""Writing files so that an interruption never leaves half of one: a temporary file beside the
target, then a rename. The result looks like a plain write: any name that is legal for the target
can be written, a new file gets ``0o666`` minus the umask and a replaced file keeps its mode."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path


def _temporary_name(name: str, limit: int) -> str:
    """A hidden name beside ``name`` that keeps its suffix and fits in ``limit`` bytes."""
    suffix = Path(name).suffix if len(os.fsencode(Path(name).suffix)) <= 16 else ""
    tag = f".{secrets.token_hex(4)}.tmp"
    room = limit - len(os.fsencode(f".{tag}{suffix}"))
    stem = os.fsencode(name)[:room].decode(errors="ignore")  # cut on a character boundary (bytes that are
    # not UTF-8, possible in Linux names, are left out: the temporary name only has to be unique and hidden)
    return f".{stem}{tag}{suffix}"


def _create_temporary(folder: Path, name: str) -> Path:
    try:
        limit = os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        limit = 255
    while True:
        temp = folder / _temporary_name(name, limit)
        try:
            # 0o666 as open() uses: the umask applies exactly as to a plain write
            os.close(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return temp
        except FileExistsError:
            continue


def plain_mode() -> int:
    """The mode a plain ``open(path, "w")`` gives a new file: 0o666 less the process's umask (read by
    setting it and setting it back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def give_plain_modes(folder: Path) -> None:
    """Give every file under ``folder`` :func:`plain_mode` (libraries that write 0o600, as safetensors does,
    would leave shards and checkpoints unreadable to other users and training ranks)."""
    mode = plain_mode()
    for file in Path(folder).rglob("*"):
        if file.is_file() and not file.is_symlink():
            os.chmod(file, mode)


def write_atomic(path: str | Path, write: Callable[[Path], object]) -> None:
    """Call ``write(temporary path)`` beside ``path``, then rename the result over ``path``.

    The temporary file is hidden (a leading dot), keeps ``path``'s suffix (so writers that pick a
    format from it still work), and is removed if ``write`` fails or is interrupted. A symbolic
    link is written through, as a plain write does. An ``OSError`` names ``path``, never the
    temporary file.
    """
    path = Path(path)
    if path.is_symlink():
        path = path.resolve()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = _create_temporary(path.parent, path.name)
    except OSError as err:
        raise OSError(err.errno, f"cannot write {path}: {err.strerror or err}") from err
    try:
        write(temp)
        # A replaced file keeps its mode; a new one gets a plain write's (0o666 less the umask), also
        # when the writer re-created the file with its own (safetensors writes 0o600).
        os.chmod(temp, path.stat().st_mode & 0o7777 if path.exists() else plain_mode())
        os.replace(temp, path)
    except OSError as err:
        temp.unlink(missing_ok=True)
        raise OSError(err.errno, f"cannot write {path}: {err.strerror or err}") from err
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    write_atomic(path, lambda temp: temp.write_text(text, encoding="utf-8"))


def folders_to_make(folder: str | Path) -> list[Path]:
    """``folder`` and the folders above it that do not exist yet, deepest first: what ``mkdir -p`` makes,
    so that a run that ends up writing nothing can take them away again (:func:`remove_empty`)."""
    folder = Path(folder)
    return [f for f in (folder, *folder.parents) if not f.exists()]


def remove_empty(folders: list[Path]) -> None:
    """Remove each of ``folders``, in order (deepest first), that is empty; one that holds anything stays."""
    for folder in folders:
        with contextlib.suppress(OSError):  # not empty, or already gone
            folder.rmdir()


def can_write_in(folder: str | Path, keep: bool = False) -> str | None:
    """Whether a file could be written in ``folder`` (made if missing): None if so, else the reason. Tries it
    with a hidden temporary file, removed at once, and removes the folders it made to find out (unless
    ``keep``: several processes may check one folder at once), so a run can refuse an unwritable
    destination (``/proc/x``, a read-only disk) before its work, leaving nothing."""
    folder = Path(folder)
    made = [] if keep else folders_to_make(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _create_temporary(folder, "probe").unlink()
        return None
    except OSError as err:
        return err.strerror or str(err)
    finally:
        remove_empty(made)


def lock_folder(folder: str | Path) -> Callable[[], None] | None:
    """Take an exclusive lock on the existing ``folder`` for this run, so that a second run writing the same
    folder at once (a command started twice, a job scheduled twice) is refused instead of mixing its files
    with the first's. Returns the lock's release (also when called twice), or None when another process
    holds it. The kernel releases it when the process ends, even killed, so a lock is never stale. Where the
    file system cannot lock (flock on some network file systems, Windows) or the folder cannot be opened
    for reading, nothing is checked."""
    try:
        import fcntl
    except ImportError:  # Windows
        return lambda: None
    try:
        handle = os.open(folder, os.O_RDONLY)  # the folder itself: no lock file to leave behind
    except OSError:  # a folder this user may write in but not list (mode -wx): not checked
        return lambda: None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(handle)
        return None
    except OSError:  # a file system that cannot lock: not checked
        os.close(handle)
        return lambda: None
    held = [handle]

    def release() -> None:
        while held:
            os.close(held.pop())

    return release


LOW_SPACE_BYTES = 16 * 2**20
"""Free bytes below which a failed write is taken for a full disk (torch's checkpoint writer reports one as
``unexpected pos ...`` or ``iostream error``, without an errno)."""


OTHER_CAUSES = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOENT, errno.ENOTDIR, errno.EISDIR})
"""Errnos of a failed write that say why it failed, whatever the free space: never "the disk is full"."""


def out_of_space(err: BaseException, path: str | Path) -> bool:
    """Whether writing at ``path`` failed because its disk (or quota) is full: an ``OSError`` with ENOSPC or
    EDQUOT, an error that says so (safetensors: ``os error 28``), or any other failure with less than
    :data:`LOW_SPACE_BYTES` left there, unless its errno names another cause (permission, a read-only or
    missing path)."""
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if isinstance(err, OSError) and err.errno in OTHER_CAUSES:
        return False
    if "No space left on device" in str(err) or "os error 28" in str(err):
        return True
    folder = Path(path)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return shutil.disk_usage(folder).free < LOW_SPACE_BYTES
    except OSError:
        return False


def file_sha256(path: Path) -> str:
    """The SHA-256 of the file at ``path`` as 64 hex digits, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
