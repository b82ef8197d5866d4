"""Descriptions: manifests and a captioning model (pure/data/captions.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from pure.config import CaptionConfig
from pure.data.captions import (
    ManifestError,
    MissingDescriptionsError,
    append_manifest,
    check_descriptions,
    describe_missing,
    load_captioner,
    read_manifest,
)


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_manifest_round_trip(tmp_path, suffix):
    path = tmp_path / f"m{suffix}"
    assert read_manifest(path) == {}
    append_manifest(path, {"a.png": "A cat, sitting.", "sub/b.png": 'Quotes "and" commas, too.'})
    append_manifest(path, {"a.png": "A dog."})
    assert read_manifest(path) == {"a.png": "A dog.", "sub/b.png": 'Quotes "and" commas, too.'}


def test_manifest_errors_name_the_file(tmp_path):
    bad = tmp_path / "m.jsonl"
    bad.write_text('{"image": "a.png", "description": "ok"}\n{"image": "b.png"}\n')
    with pytest.raises(ManifestError, match=r"m.jsonl:2"):
        read_manifest(bad)
    for value in ("null", '["a", "b"]', "5"):  # never stored as the text 'None', "['a', 'b']" or '5'
        bad.write_text(f'{{"image": "a.png", "description": {value}}}\n')
        with pytest.raises(ManifestError, match=r"m.jsonl:1: .*the description is \w+, not text"):
            read_manifest(bad)
    (tmp_path / "short.csv").write_text('image,description\na.png,"A cat."\nb.png\n')  # csv: None
    with pytest.raises(ManifestError, match=r"short.csv:3: expected image,description, got only 'b.png'"):
        read_manifest(tmp_path / "short.csv")
    (tmp_path / "comma.csv").write_text("image,description\nb.png,A cat, asleep.\n")  # not ' asleep.' lost
    with pytest.raises(ManifestError, match=r"comma.csv:2: more cells .* in double quotes"):
        read_manifest(tmp_path / "comma.csv")
    (tmp_path / "empty.csv").write_text("image,description\nb.png,\n")  # an empty one is no description
    assert read_manifest(tmp_path / "empty.csv") == {"b.png": ""}
    (tmp_path / "blank.csv").write_text("image,description\na.png,A cat.,\n  \n")  # nothing in them is lost
    assert read_manifest(tmp_path / "blank.csv") == {"a.png": "A cat."}
    (tmp_path / "m.csv").write_text("file,text\na,b\n")
    with pytest.raises(ManifestError, match="image,description"):
        read_manifest(tmp_path / "m.csv")


def test_descriptions_are_batched_and_cached(shared_data_dir, tmp_path):
    hr = shared_data_dir / "realsr-mini" / "hr"
    images = {p.name: p for p in sorted(hr.glob("*.png"))[:5]}
    manifest = tmp_path / "m.jsonl"
    append_manifest(manifest, {"Canon_001_LR4.png": "Given."})
    calls = []

    def captioner(batch):
        calls.append(len(batch))
        return ["" if len(calls) == 1 and i == 0 else f"Image {i}." for i in range(len(batch))]

    new = describe_missing(images, manifest, captioner, batch_size=2, progress=False)
    assert calls == [2, 2] and len(new) == 3  # one answer was empty: not stored, still missing
    assert describe_missing(images, manifest, captioner, batch_size=2, progress=False) == {
        sorted(images)[1]: "Image 0."
    }
    assert calls == [2, 2, 1]
    assert describe_missing(images, manifest, captioner, batch_size=2, progress=False) == {}
    assert calls == [2, 2, 1] and len(read_manifest(manifest)) == 5


def test_missing_descriptions_are_listed_unless_allowed():
    one_line = r"^2 image\(s\) have no description in m.jsonl \(b.png, c.png\); add them [^\n]*$"
    with pytest.raises(MissingDescriptionsError, match=one_line):
        check_descriptions(["a.png", "b.png", "c.png"], {"a.png": "A."}, CaptionConfig(manifest="m.jsonl"))
    check_descriptions(["a.png", "b.png"], {}, CaptionConfig(allow_missing=True))
    with pytest.raises(MissingDescriptionsError, match=r"1 image\(s\) .* \(b.png\); "):  # blank: none
        check_descriptions(
            ["a.png", "b.png"], {"a.png": "A.", "b.png": "   "}, CaptionConfig(manifest="m.jsonl")
        )


def test_manifest_keys_written_otherwise_are_named_with_the_image_they_meant():
    descriptions = {"./b.png": "B.", "/data/hq/sub/C.png": "C.", "other.png": "O."}
    with pytest.raises(MissingDescriptionsError) as refused:
        check_descriptions(["a.png", "b.png", "sub/c.png"], descriptions, CaptionConfig(manifest="m.jsonl"))
    assert (
        "the manifest names './b.png' (for b.png), '/data/hq/sub/C.png' (for sub/c.png): write each key as "
        "the image's path relative to its HQ folder, as on disk; add them"
    ) in str(refused.value)
    with pytest.raises(MissingDescriptionsError) as refused:
        check_descriptions(["a.png"], {"other.png": "O."}, CaptionConfig(manifest="m.jsonl"))
    assert "the manifest names" not in str(refused.value)


def _tiny_blip(folder: Path) -> Path:
    """A random BLIP captioner whose decoder always writes 'cat' (transformers loads it from the folder)."""
    from transformers import (
        BertTokenizer,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
    )

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", "a", "photo", "of", "cat"]
    tokenizer = BertTokenizer(vocab={word: i for i, word in enumerate(words)}, bos_token="[DEC]")
    vision = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "image_size": 32,
        "patch_size": 16,
    }
    text = {
        "vocab_size": len(words),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "bos_token_id": 5,
        "pad_token_id": 0,
        "sep_token_id": 3,
        "eos_token_id": 3,
    }
    torch.manual_seed(0)
    model = BlipForConditionalGeneration(
        BlipConfig(vision_config=vision, text_config=text, projection_dim=32)
    )
    with torch.no_grad():
        model.text_decoder.cls.predictions.bias[9] = 100.0
    model.save_pretrained(folder)
    BlipProcessor(BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer).save_pretrained(folder)
    return folder


def test_captioning_model_from_a_local_folder(shared_data_dir, tmp_path):
    cfg = CaptionConfig(
        model=str(_tiny_blip(tmp_path / "blip")), prompt="a photo of", max_new_tokens=3, batch_size=2
    )
    captioner = load_captioner(cfg)
    images = [
        Image.open(p).convert("RGB")
        for p in sorted((shared_data_dir / "realsr-mini" / "hr").glob("*.png"))[:3]
    ]
    assert captioner(images) == ["cat cat cat"] * 3
    with pytest.raises(ValueError, match="captioning model"):
        load_captioner(CaptionConfig(model=str(tmp_path / "nothing")))


def test_a_captioning_model_that_cannot_load_is_one_clear_error(tmp_path, monkeypatch):
    from pure.data.captions import CaptionerError, load_captioner
    from pure.errors import PureError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(
        CaptionerError, match=r"cannot load the captioning model .*scripts/download.py"
    ) as caught:
        load_captioner(CaptionConfig(model=str(tmp_path / "no-model")))
    assert isinstance(caught.value, PureError) and "\n" not in str(caught.value)


def test_manifests_saved_by_excel_are_read(tmp_path):
    """Excel's "CSV UTF-8" starts with a byte-order mark; other encodings are one line naming the fix."""
    (tmp_path / "m.csv").write_bytes(b'\xef\xbb\xbfimage,description\r\na.png,caf\xc3\xa9 "on" a\r\n')
    (tmp_path / "m.jsonl").write_bytes(b'\xef\xbb\xbf{"image": "a.png", "description": "x"}\r\n')
    assert read_manifest(tmp_path / "m.csv") == {"a.png": 'café "on" a'}
    assert read_manifest(tmp_path / "m.jsonl") == {"a.png": "x"}
    (tmp_path / "latin.csv").write_bytes(b"image,description\na.png,caf\xe9\n")
    with pytest.raises(ManifestError, match=r"latin.csv is not UTF-8 text .*save it as UTF-8"):
        read_manifest(tmp_path / "latin.csv")


@pytest.mark.parametrize(
    "name,last",
    [
        ("m.csv", "image,description\r\na.png,A brick wall."),
        ("m.jsonl", '{"image": "a.png", "description": "A brick wall."}'),
    ],
)
def test_appending_to_a_manifest_without_a_final_newline_keeps_its_last_entry(tmp_path, name, last):
    """Excel and editors save without a final newline: the new entries must not join the last line."""
    path = tmp_path / name
    path.write_bytes(last.encode())
    append_manifest(path, {"b.png": "A cat."})
    assert read_manifest(path) == {"a.png": "A brick wall.", "b.png": "A cat."}
