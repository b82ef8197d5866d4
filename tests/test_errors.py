"""The helpers every one-line message goes through (pure/errors.py)."""

from __future__ import annotations

from pure.errors import error_reason, run_from_hint


def test_a_library_error_is_its_type_and_one_cut_line():
    """huggingface_hub, transformers and YAML write messages over several lines; a message quotes one."""
    err = ValueError("Couldn't instantiate the backend tokenizer.\n  You need one of:\n\t(1) a file")
    assert error_reason(err) == (
        "ValueError: Couldn't instantiate the backend tokenizer. You need one of: (1) a file"
    )
    assert error_reason(OSError("x" * 500), 300) == "OSError: " + "x" * 300
    assert error_reason(KeyError()) == "KeyError: "


def test_the_run_from_hint_only_for_a_relative_path(tmp_path):
    """An absolute path was told to 'run from the folder the config's paths are relative to'."""
    assert run_from_hint("../shared/data/hq") == ", or run from the folder the config's paths are relative to"
    assert run_from_hint(tmp_path / "hq") == ""
