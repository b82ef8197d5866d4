"""Decode loop: golden CFG trajectory, a complete 512 px answer, rows at different places in a batch."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pure.config import SamplingConfig
from pure.generate import generate, replay
from pure.model import load_backbone, load_tokenizer, load_vocab
from pure.sequence import block_length, conversation, split_answer
from pure.tiny import det_state_dict, synthetic_vocabulary, write_backbone_checkpoint, write_tiny_checkpoint
from pure.vocab import Vocab
from tests.reference import require


@pytest.fixture(scope="module")
def reference_model(reference_dir, tmp_path_factory):
    files = ("backbone/config.json", "backbone/state_dict_shapes.json", "cfg/cfg_trajectory.json")
    ref = require(reference_dir, *files, "cfg/cfg_trajectory.npz") / "backbone"
    config = json.loads((ref / "config.json").read_text())
    shapes = json.loads((ref / "state_dict_shapes.json").read_text())
    seed = json.loads((reference_dir / "cfg" / "cfg_trajectory.json").read_text())["weights_seed"]
    folder = write_backbone_checkpoint(tmp_path_factory.mktemp("ref"), config, det_state_dict(shapes, seed))
    return load_backbone(str(folder), dtype=torch.float32)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = str(write_tiny_checkpoint(tmp_path_factory.mktemp("tiny"), seed=5))
    tokenizer = load_tokenizer(folder)
    return load_backbone(folder, dtype=torch.float32), tokenizer, load_vocab(tokenizer, folder)


def test_replay_matches_reference_cfg_trajectory(reference_model, reference_dir):
    meta = json.loads((reference_dir / "cfg" / "cfg_trajectory.json").read_text())
    ref = np.load(reference_dir / "cfg" / "cfg_trajectory.npz")
    vocab = Vocab.from_names(synthetic_vocabulary(), bos=0)
    sampling = SamplingConfig(
        cfg_scale=meta["guidance_scale"], temperature=meta["temperature"], text_top_k=meta["text_top_k"]
    )
    out = replay(
        reference_model,
        torch.from_numpy(ref["prompt_ids"]),
        torch.from_numpy(ref["step_token"]),
        vocab,
        sampling,
    )
    np.testing.assert_allclose(out.entropy[0].numpy(), ref["step_entropy"], rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(out.kept[0].numpy(), ref["step_topk_n_finite"])
    np.testing.assert_allclose(out.p_token[0].numpy(), ref["step_p_token"], rtol=1e-4)


def test_replay_batched_equals_single(reference_model, reference_dir):
    """Two prompts of different lengths at different places of the grammar, in one batch."""
    ref = np.load(reference_dir / "cfg" / "cfg_trajectory.npz")
    vocab = Vocab.from_names(synthetic_vocabulary(), bos=0)
    prompt, tokens = torch.from_numpy(ref["prompt_ids"]), torch.from_numpy(ref["step_token"])
    ahead, length = len(tokens) // 4, len(tokens) // 2  # 19 and 38 of the public set's 76 steps
    prompts = [prompt, torch.cat([prompt, tokens[:ahead]])]  # the second row is further into the image
    teacher = [tokens[:length], tokens[ahead : ahead + length]]
    batched = generate(reference_model, prompts, vocab, SamplingConfig(), teacher=teacher)
    for b in range(2):
        single = generate(reference_model, [prompts[b]], vocab, SamplingConfig(), teacher=[teacher[b]])
        np.testing.assert_allclose(
            batched.entropy[b].numpy(), single.entropy[0].numpy(), rtol=1e-4, atol=1e-5
        )
        np.testing.assert_allclose(
            batched.p_token[b].numpy(), single.p_token[0].numpy(), rtol=1e-3, atol=1e-7
        )
        assert torch.equal(batched.kept[b], single.kept[0])


def test_an_empty_continuation_replays_nothing_beside_a_full_one(reference_model, reference_dir):
    """A batch whose second continuation is empty: that row yields nothing, the first row what it yields
    alone (the empty row used to crash the padding); a teacher or seed list of another length than the
    prompts is a ValueError naming it."""
    ref = np.load(reference_dir / "cfg" / "cfg_trajectory.npz")
    vocab = Vocab.from_names(synthetic_vocabulary(), bos=0)
    prompt, tokens = torch.from_numpy(ref["prompt_ids"]), torch.from_numpy(ref["step_token"])
    given = tokens[: len(tokens) // 4]
    batched = generate(reference_model, [prompt, prompt], vocab, SamplingConfig(), teacher=[given, given[:0]])
    single = generate(reference_model, [prompt], vocab, SamplingConfig(), teacher=[given])
    assert len(batched.ids[1]) == 0 and torch.equal(batched.ids[0], single.ids[0])
    np.testing.assert_allclose(batched.p_token[0].numpy(), single.p_token[0].numpy(), rtol=1e-3, atol=1e-7)
    with pytest.raises(ValueError, match="teacher has 1 entries for 2 prompts"):
        generate(reference_model, [prompt, prompt], vocab, SamplingConfig(), teacher=[given])
    with pytest.raises(ValueError, match="seeds has 3 entries for 2 prompts"):
        generate(reference_model, [prompt, prompt], vocab, SamplingConfig(), seeds=[1, 2, 3])


@pytest.mark.slow
def test_tiny_model_writes_a_complete_512_answer(tiny):
    model, tokenizer, vocab = tiny
    lq = torch.randint(0, 16384, (64, 64), generator=torch.Generator().manual_seed(0))
    prompt, _ = conversation(tokenizer, vocab, lq, answer_text="Small blur, small noise. A cat on a mat.")
    budget = block_length(64, 64) + 2
    out = generate(
        model, [prompt], vocab, SamplingConfig(max_new_tokens=budget), image_grids=(16, 16), max_text_tokens=0
    )
    ids = out.ids[0]
    start = int((ids == vocab.image_start).nonzero()[0])
    block = ids[start : start + block_length(64, 64)]
    assert block[:3].tolist() == [vocab.image_start, vocab.size_token(16), vocab.size_token(16)]
    assert block[-1] == vocab.image_end
    rows = block[3:-1].view(64, 65)
    assert (rows[:, -1] == vocab.end_of_row).all() and vocab.is_image[rows[:, :-1]].all()
    answer = split_answer(torch.cat([ids, torch.tensor([vocab.end_of_turn])]), tokenizer, vocab)
    assert answer.codes.shape == (64, 64)
    assert len(out.entropy[0]) == len(ids)


@pytest.mark.slow
def test_generation_is_reproducible_and_seeded(tiny):
    model, tokenizer, vocab = tiny
    lq = torch.randint(0, 16384, (8, 8), generator=torch.Generator().manual_seed(1))
    prompt, _ = conversation(tokenizer, vocab, lq)
    sampling = SamplingConfig(max_new_tokens=90)
    runs = [
        generate(model, [prompt, prompt], vocab, sampling, image_grids=(2, 2), max_text_tokens=5)
        for _ in range(2)
    ]
    assert torch.equal(runs[0].ids[0], runs[1].ids[0]) and torch.equal(runs[0].ids[1], runs[1].ids[1])
    # text is greedy (text_top_k=1) so both rows agree there; image codes come from different seeds
    assert torch.equal(runs[0].ids[0][:5], runs[0].ids[1][:5])
    assert not torch.equal(runs[0].ids[0], runs[0].ids[1])
    for ids in runs[0].ids:
        answer = split_answer(ids, tokenizer, vocab)
        assert answer.codes is not None and answer.codes.shape == (8, 8)


def test_budget_stops_generation(tiny):
    model, tokenizer, vocab = tiny
    prompt, _ = conversation(tokenizer, vocab, torch.zeros(4, 4, dtype=torch.long))
    out = generate(model, [prompt], vocab, SamplingConfig(max_new_tokens=7))
    assert len(out.ids[0]) <= 7
