"""Tests of pure/vocab.py: image-token names read from a model folder's files."""

from __future__ import annotations

import pytest

from pure.vocab import VocabError, image_names_from_files


def test_a_damaged_text_tokenizer_json_is_one_clear_error(tmp_path):
    """The reference's text_tokenizer.json placed in a model folder, cut or a git-lfs pointer: json's bare
    JSONDecodeError traceback before; one VocabError naming the file now."""
    (tmp_path / "text_tokenizer.json").write_text('{"model": {"vocab": {"<reserved08707>": 4, "IMGIMGBA')
    expected = rf"{tmp_path / 'text_tokenizer.json'} is not readable \(JSONDecodeError"
    with pytest.raises(VocabError, match=expected):
        image_names_from_files(tmp_path)
    (tmp_path / "text_tokenizer.json").write_text('{"model": {"vocab": {"IMGIMGBA": 4, "a": 5}}}')
    assert image_names_from_files(tmp_path) == {"IMGIMGBA": 4}
