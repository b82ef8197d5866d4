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
from tests.reference import require, top_k_bounds


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
    k_min, k_max = top_k_bounds(reference_dir, meta)
    sampling = SamplingConfig(
        cfg_scale=meta["guidance_scale"],
        temperature=meta["temperature"],
        text_top_k=meta["text_top_k"],
        image_top_k_min=k_min,
        image_top_k_max=k_max,
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


def _spec_reading(ids: list[int], cond, uncond, g: float, temperature: float, text_k: int, bounds) -> tuple:
    """README section 4.4 read plainly, one row at a time with the reference's literal ids: guidance, grammar,
    entropy-adaptive top-k, temperature. -> (tempered scores [V] with -inf for dropped tokens, entropy)."""
    image = torch.zeros(cond.shape[-1], dtype=torch.bool)
    image[4:8196], image[65536:73728] = True, True
    is_open = ids.count(8197) == ids.count(8196) + 1
    s = len(ids) - 1 - ids[::-1].index(8197) if is_open else 0
    n = len(ids) - s - 1
    scores = cond.clone()
    if is_open and n >= 2:
        if g != 1.0:
            scores = g * (cond - uncond) + uncond
        h, w, t = 4 * (ids[s + 1] - 8804), 4 * (ids[s + 2] - 8804), n - 2
        forced = 8803 if (t + 1) % (w + 1) == 0 else 8196 if t + 1 == (w + 1) * h + 1 else None
        if forced is not None:
            scores = torch.full_like(scores, float("-inf"))
            scores[forced] = 0.0
        else:
            scores = scores.masked_fill(~image, float("-inf"))
    p = torch.softmax(scores, -1)
    entropy = float(-(p * torch.log(p + 1e-10)).sum())
    if is_open:
        lo, hi = bounds
        k = lo + (hi - lo) / (1 + np.exp(-(max(0.0, min(entropy, 10.0)) - 5)))
        k = max(lo, min(int(round(k)), hi))
    else:
        k = min(text_k, len(scores))
    scores = scores.masked_fill(scores < torch.topk(scores, k).values[-1], float("-inf"))
    return scores / temperature, entropy


def _random_context(rng: np.random.Generator) -> list[int]:
    """BOS, text, a closed LQ block, end of turn, text, then (mostly) an HQ block cut at a random place:
    before its size tokens, between them, inside a row, at a row's end or at the block's end."""
    text = lambda n: rng.integers(10000, 60000, n).tolist()  # noqa: E731
    codes = lambda n: [int(c) + 4 if c < 8192 else int(c) + 65536 - 8192 for c in rng.integers(0, 16384, n)]  # noqa: E731

    def block(h_grids: int, w_grids: int) -> list[int]:
        h, w = 4 * h_grids, 4 * w_grids
        body = [tok for _ in range(h) for tok in [*codes(w), 8803]]
        return [8197, 8804 + h_grids, 8804 + w_grids, *body, 8196]

    ids = [0, *text(int(rng.integers(1, 6))), *block(1, 1), 8710, *text(int(rng.integers(0, 4)))]
    if rng.random() < 0.15:
        return ids  # text: no image open
    hq = block(int(rng.integers(1, 4)), int(rng.integers(1, 4)))
    return ids + hq[: int(rng.integers(1, len(hq) + 1))]


def test_step_rules_equal_a_plain_reading_of_the_reference_on_random_contexts():
    """Every rule of a sampling step (generate._candidates) against a row-by-row reading of README 4.4 with
    literal ids, over random contexts (non-square blocks, every place of the grammar, closed images) and
    settings other than PURE's: guidance 0 to 3 (1: off), temperature, text top-k and the adaptive k's
    bounds, on scores of several spreads (some rounded to bf16, so ties sit at the top-k threshold)."""
    from pure.generate import _candidates, _Rules
    from pure.sampling import initial_state

    vocab = Vocab.from_names(synthetic_vocabulary(), bos=0)
    rng = np.random.default_rng(2025)
    for trial in range(12):
        g = [0.0, 0.8, 1.0, 1.7, 3.0, float(rng.uniform(0, 3))][trial % 6]
        lo = int(rng.integers(1, 40))
        sampling = SamplingConfig(
            cfg_scale=g,
            temperature=float(rng.uniform(0.3, 1.5)),
            text_top_k=int(rng.integers(1, 60)),
            image_top_k_min=lo,
            image_top_k_max=int(rng.integers(lo, 2500)),
        )
        contexts = [_random_context(rng) for _ in range(6)]
        spread = torch.from_numpy(rng.uniform(0.5, 8.0, (6, 1))).float()
        cond = torch.from_numpy(rng.standard_normal((6, 73728))).float() * spread
        uncond = torch.from_numpy(rng.standard_normal((6, 73728))).float() * spread
        if trial % 3 == 2:  # bf16 logits: many exact ties
            cond, uncond = cond.bfloat16().float(), uncond.bfloat16().float()
        state = initial_state([torch.tensor(c) for c in contexts], vocab)
        rules = _Rules(vocab, sampling, g != 1.0, None, 512, False, 0, -1)
        values, ids, entropy = _candidates(cond, uncond, state, 0, rules)
        bounds = (sampling.image_top_k_min, sampling.image_top_k_max)
        for b, context in enumerate(contexts):
            expected, h = _spec_reading(
                context, cond[b], uncond[b], g, sampling.temperature, sampling.text_top_k, bounds
            )
            ours = torch.full_like(expected, float("-inf"))
            ours[ids[b]] = values[b]
            where = f"trial {trial}, row {b}, context tail {context[-4:]}"
            assert abs(float(entropy[b]) - h) <= 1e-4 * max(1.0, abs(h)), where
            assert torch.equal(torch.isfinite(ours), torch.isfinite(expected)), where
            kept = torch.isfinite(expected)
            torch.testing.assert_close(ours[kept], expected[kept], msg=where)
