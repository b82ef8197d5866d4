"""Token layout: vocabulary names, image blocks, conversations, and the reference's 512 px layout."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from pure.sequence import (
    IGNORE_INDEX,
    INSTRUCTION,
    LayoutError,
    block_length,
    conversation,
    image_block,
    parse_image_block,
    split_answer,
)
from pure.tiny import (
    END_OF_TURN_ID,
    FIRST_IMAGE_ID,
    HALF_CODEBOOK,
    RESERVED_OFFSET,
    SECOND_IMAGE_ID,
    SPECIAL_IDS,
    det_state_dict,
    synthetic_vocabulary,
    tiny_tokenizer,
)
from pure.vocab import Vocab, VocabError, image_token_code, image_token_name, size_token_name
from pure.vq import image_to_tensor, load_vq, tensor_to_image
from tests.reference import require


@pytest.fixture(scope="module")
def vocab() -> Vocab:
    return Vocab.from_names(synthetic_vocabulary(), bos=0)


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


def test_special_tokens_by_name(vocab):
    """PURE's layout (SPEC section 1): Chameleon's <racm3:break>/<eoss> open/close an image,
    <reserved08799> ends a row, <reserved08706> a turn, <reserved{8800+n}> counts n grids."""
    reserved = lambda n: n + RESERVED_OFFSET  # noqa: E731  (id of <reservedNNNNN>)
    assert (vocab.image_start, vocab.image_end, vocab.end_of_row, vocab.end_of_turn) == (
        SPECIAL_IDS["<racm3:break>"],
        SPECIAL_IDS["<eoss>"],
        reserved(8799),
        END_OF_TURN_ID,
    )
    assert size_token_name(16) == "<reserved08816>" and vocab.size_token(16) == reserved(8816)
    assert image_token_code("IMGIMGBAFZ") == 105 and image_token_name(105) == "IMGIMGBAFZ"


def test_code_maps_come_from_names(vocab):
    last_of_first_half = FIRST_IMAGE_ID + HALF_CODEBOOK - 1
    assert vocab.code_to_id[0] == FIRST_IMAGE_ID and vocab.code_to_id[HALF_CODEBOOK - 1] == last_of_first_half
    assert vocab.code_to_id[HALF_CODEBOOK] == SECOND_IMAGE_ID
    assert int(vocab.is_image.sum()) == 16384
    codes = torch.randint(0, 16384, (5, 7))
    assert torch.equal(vocab.ids_to_codes(vocab.codes_to_ids(codes)), codes)
    with pytest.raises(ValueError, match="not image tokens"):
        vocab.ids_to_codes(torch.tensor([vocab.image_start]))


def test_incomplete_vocabulary_says_what_to_fetch():
    names = synthetic_vocabulary()
    names.pop(image_token_name(77))
    with pytest.raises(VocabError, match="16383 of 16384.*text_tokenizer.json"):
        Vocab.from_names(names, bos=0)
    names = synthetic_vocabulary()
    names.pop("<eoss>")
    with pytest.raises(VocabError, match="<eoss>"):
        Vocab.from_names(names, bos=0)


def test_block_round_trip_and_errors(vocab):
    codes = torch.randint(0, 16384, (8, 12))
    block = image_block(codes, vocab)
    assert len(block) == block_length(8, 12) == 4 + 8 * 13
    assert block[:3].tolist() == [vocab.image_start, vocab.size_token(2), vocab.size_token(3)]
    assert block[-1] == vocab.image_end
    assert torch.equal(parse_image_block(block, vocab), codes)
    broken = block.clone()
    broken[3 + 12] = vocab.code_to_id[5]  # first end-of-row replaced by a code
    with pytest.raises(LayoutError, match="row 0"):
        parse_image_block(broken, vocab)
    with pytest.raises(LayoutError, match="tokens"):
        parse_image_block(block[:-5], vocab)
    with pytest.raises(LayoutError, match="multiple of 4"):
        image_block(torch.zeros(6, 8, dtype=torch.long), vocab)


def test_conversation_layout_and_labels(vocab, tokenizer):
    lq, hq = torch.randint(0, 16384, (8, 8)), torch.randint(0, 16384, (8, 8))
    text = "Medium blur, small noise. A lion."
    ids, labels = conversation(tokenizer, vocab, lq, text, hq)
    n_instr = len(tokenizer.encode(INSTRUCTION, add_special_tokens=False))
    n_text = len(tokenizer.encode(text, add_special_tokens=False))
    user_len = 1 + n_instr + block_length(8, 8) + 1
    assert ids[0] == vocab.bos and ids[user_len - 1] == vocab.end_of_turn
    assert ids[1 + n_instr] == vocab.image_start
    assert (labels[:user_len] == IGNORE_INDEX).all()
    assert torch.equal(labels[user_len:], ids[user_len:])
    assert len(ids) == user_len + n_text + block_length(8, 8) + 1 and ids[-1] == vocab.end_of_turn
    answer = split_answer(ids[user_len:], tokenizer, vocab)
    assert answer.text == text and torch.equal(answer.codes, hq)
    prompt, prompt_labels = conversation(tokenizer, vocab, lq)
    assert torch.equal(prompt, ids[:user_len]) and (prompt_labels == IGNORE_INDEX).all()


@pytest.mark.slow
def test_reference_512_layout(reference_dir, vocab, tmp_path):
    """lq512.png -> VQ codes -> 4164-token block equal to the reference's, except documented near-ties."""
    layout = ("layout/layout_512.npz", "layout/layout_512.json", "layout/lq512.png")
    require(reference_dir, *layout, "vq8/state_dict_shapes.json", "vq8/vq8.json")
    ref = np.load(reference_dir / "layout" / "layout_512.npz")
    meta = json.loads((reference_dir / "layout" / "layout_512.json").read_text())
    shapes = json.loads((reference_dir / "vq8" / "state_dict_shapes.json").read_text())
    seed = json.loads((reference_dir / "vq8" / "vq8.json").read_text())["weights_seed"]
    torch.save({"model": det_state_dict(shapes, seed)}, tmp_path / "vq.pt")
    vq = load_vq(str(tmp_path / "vq.pt"))
    lq512 = Image.open(reference_dir / "layout" / "lq512.png")
    with torch.no_grad():
        codes = vq.encode(image_to_tensor(lq512)[None])[0]
    tie = torch.from_numpy(ref["code_margin"] < 1e-5)
    assert int(tie.sum()) == meta["code_margin_squared_distance"]["n_below_1e_5"]
    assert torch.equal(codes[~tie], torch.from_numpy(ref["codes"])[~tie])
    tokens = image_block(codes, vocab)
    assert len(tokens) == meta["n_tokens"] == block_length(*codes.shape)  # 4164 at 512 px
    assert tokens[:3].tolist() == meta["head"] and tokens[-1:].tolist() == meta["tail"]
    body_tie = torch.cat([tie, torch.zeros(len(tie), 1, dtype=torch.bool)], 1).flatten()
    same = tokens[3:-1] == torch.from_numpy(ref["tokens"][3:-1])
    assert bool(same[~body_tie].all())
    with torch.no_grad():
        decoded = np.asarray(tensor_to_image(vq.decode(torch.from_numpy(ref["codes"])[None])[0]))
    height, width = ref["decoded_crop_uint8"].shape[:2]
    crop = decoded[:height, :width].astype(int) - ref["decoded_crop_uint8"].astype(int)
    assert np.abs(crop).max() <= 1 and (crop != 0).mean() < 1e-3
    sums = decoded.reshape(-1, 3).sum(0).astype(np.int64)
    boundary = decoded.shape[0] * decoded.shape[1] // 1000  # +-1 on under 1e-3 of the pixels, as in the crop
    assert np.abs(sums - ref["decoded_channel_sum"].astype(np.int64)).max() <= boundary


def test_image_codes_block_round_trip(vocab):
    """image -> codes -> block -> codes -> image, with a tiny VQ."""
    from pure.config import VQConfig

    vq = load_vq("tiny", cfg=VQConfig(source="tiny", channels=32, z_channels=64))
    pixels = np.random.default_rng(0).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    x = image_to_tensor(Image.fromarray(pixels))[None]
    with torch.no_grad():
        codes = vq.encode(x)[0]
        block = image_block(codes, vocab)
        back = parse_image_block(block, vocab)
        image = tensor_to_image(vq.decode(back[None])[0])
    assert torch.equal(back, codes) and codes.shape == (8, 12)
    assert len(block) == block_length(8, 12) and image.size == (96, 64)
