"""The atomic writer (pure/files.py) behaves like a plain write: any legal name, the same permissions,
never half a file, errors that name the target."""

from __future__ import annotations

import ast
import os
import stat
from pathlib import Path

import pytest

from pure.files import give_plain_modes, plain_mode, write_atomic, write_text_atomic


def _plain_write_mode(folder) -> int:
    plain = folder / "plain.txt"
    plain.write_text("x")
    return stat.S_IMODE(plain.stat().st_mode)


@pytest.mark.parametrize(
    "name",
    [
        "a" * 250 + ".json",
        "é" * 120 + ".png",
        ".hidden",
        ".DS_Store.json",
        "no_suffix",
        "x" * 255,
        "two.dots.png",
    ],
)
def test_any_legal_name_can_be_written(tmp_path, name):
    write_text_atomic(tmp_path / name, "content")
    assert (tmp_path / name).read_text() == "content"
    assert os.listdir(tmp_path) == [name]  # no temporary file left


def test_permissions_are_those_of_a_plain_write(tmp_path):
    old = os.umask(0o022)
    try:
        write_text_atomic(tmp_path / "new.json", "{}")
        assert stat.S_IMODE((tmp_path / "new.json").stat().st_mode) == _plain_write_mode(tmp_path) == 0o644
        os.umask(0o002)
        write_text_atomic(tmp_path / "group.json", "{}")
        assert stat.S_IMODE((tmp_path / "group.json").stat().st_mode) == 0o664
        os.chmod(tmp_path / "new.json", 0o600)  # a replaced file keeps its mode, as with open("w")
        write_text_atomic(tmp_path / "new.json", "[]")
        assert stat.S_IMODE((tmp_path / "new.json").stat().st_mode) == 0o600
    finally:
        os.umask(old)


def test_a_symlink_is_written_through(tmp_path):
    (tmp_path / "real.json").write_text("old")
    (tmp_path / "link.json").symlink_to(tmp_path / "real.json")
    write_text_atomic(tmp_path / "link.json", "new")
    assert (tmp_path / "link.json").is_symlink() and (tmp_path / "real.json").read_text() == "new"


def test_never_half_a_file(tmp_path):
    target = tmp_path / "out.png"
    target.write_text("previous")

    def interrupted(path):
        path.write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomic(target, interrupted)
    assert target.read_text() == "previous" and os.listdir(tmp_path) == ["out.png"]


def test_errors_name_the_target_not_the_temporary_file(tmp_path):
    (tmp_path / "taken").mkdir()  # a folder where the file should go
    with pytest.raises(OSError) as failed:
        write_text_atomic(tmp_path / "taken", "x")
    assert f"cannot write {tmp_path / 'taken'}" in str(failed.value) and ".tmp" not in str(failed.value)
    assert os.listdir(tmp_path) == ["taken"]
    (tmp_path / "file").write_text("")
    with pytest.raises(OSError, match=f"cannot write {tmp_path / 'file' / 'x.json'}"):
        write_text_atomic(tmp_path / "file" / "x.json", "x")


def test_a_writer_that_sets_its_own_mode_still_gives_a_plain_writes_mode(tmp_path):
    """safetensors' save_file re-creates its file as 0o600: shards and adapters must be readable as any
    other output (other users, other training ranks on shared storage)."""

    def private(temp):
        temp.unlink()
        os.close(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))

    old = os.umask(0o022)
    try:
        write_atomic(tmp_path / "shard.safetensors", private)
        assert stat.S_IMODE((tmp_path / "shard.safetensors").stat().st_mode) == 0o644
    finally:
        os.umask(old)


def test_give_plain_modes_opens_what_libraries_wrote_privately(tmp_path):
    (tmp_path / "adapter").mkdir()
    private = tmp_path / "adapter" / "adapter_model.safetensors"
    private.write_bytes(b"x")
    os.chmod(private, 0o600)
    give_plain_modes(tmp_path)
    assert stat.S_IMODE(private.stat().st_mode) == plain_mode()


def test_a_full_disk_is_known_by_errno_message_or_free_space(tmp_path, monkeypatch):
    import errno
    import shutil
    from collections import namedtuple

    from pure import files

    assert files.out_of_space(OSError(errno.ENOSPC, "No space left on device"), tmp_path)
    assert files.out_of_space(RuntimeError("I/O error: No space left on device (os error 28)"), tmp_path)
    assert not files.out_of_space(RuntimeError("unexpected pos 12740672 vs 12740560"), tmp_path)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(2**30, 2**30 - 4096, 4096))
    # torch's writer says nothing of space; the folder (or, not made yet, its parent) has almost none left
    assert files.out_of_space(RuntimeError("unexpected pos 12740672 vs 12740560"), tmp_path / "new" / "x")
    # an error that names another cause is that cause, however little space is left (it was "disk full")
    for code in (errno.EACCES, errno.EROFS, errno.ENOENT):
        assert not files.out_of_space(OSError(code, os.strerror(code)), tmp_path)


def _text_io_without_encoding(source: str) -> list[int]:
    """Lines of ``source`` that read or write text in the locale's encoding: ``open``, ``Path.open``,
    ``read_text`` or ``write_text`` without ``encoding=`` (binary modes and Pillow's, os's opens aside)."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call) or any(k.arg == "encoding" for k in node.keywords):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        owner = getattr(func.value, "id", "") if isinstance(func, ast.Attribute) else ""
        if name not in ("open", "read_text", "write_text") or owner in ("Image", "os", "webbrowser"):
            continue
        modes = [a for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
        modes += [k.value for k in node.keywords if k.arg == "mode" and isinstance(k.value, ast.Constant)]
        if not any("b" in m.value for m in modes):
            lines.append(node.lineno)
    return lines


def test_text_files_are_utf8_whatever_the_locale():
    """Under a locale that is not UTF-8 (LC_ALL=C without Python's UTF-8 mode, Windows' cp1252) a training
    run with an accented log.run_name ended at its config.yaml in a UnicodeEncodeError traceback and left it
    empty, and tokenizer and model JSON files would be misread: every text file pure reads or writes names
    its encoding (write_text_atomic: UTF-8)."""
    assert _text_io_without_encoding("Path('a').write_text('x')\nopen(p, 'rb')\nImage.open(p)\n") == [1]
    package = Path(__file__).resolve().parents[1] / "pure"
    found = {
        f"{path.relative_to(package)}:{line}"
        for path in sorted(package.rglob("*.py"))
        for line in _text_io_without_encoding(path.read_text(encoding="utf-8"))
    }
    assert found == set()


def test_a_folder_is_locked_for_one_run_and_a_folder_that_cannot_be_opened_is_not_checked(
    tmp_path, monkeypatch
):
    """lock_folder refuses a second holder until the first releases; a folder this user may write in but
    not open for reading (mode -wx) would stop train.py and prepare_data.py in a PermissionError traceback,
    though it is only not checked, as on a file system without flock."""
    import pure.files

    first = pure.files.lock_folder(tmp_path)
    assert first is not None and pure.files.lock_folder(tmp_path) is None
    first()
    again = pure.files.lock_folder(tmp_path)
    assert again is not None
    again()

    def refused(path, flags, *args):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(pure.files.os, "open", refused)
    unchecked = pure.files.lock_folder(tmp_path)
    assert unchecked is not None
    unchecked()
