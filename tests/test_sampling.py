"""Sampling rules against the reference's sampler states (../shared/reference/sampler), without a model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pure.sampling import (
    ImageState,
    adaptive_top_k,
    advance,
    counter_uniform,
    draw,
    entropy,
    guidance,
    image_grammar,
    initial_state,
    top_k_candidates,
)
from pure.tiny import synthetic_vocabulary
from pure.vocab import Vocab
from tests.reference import PURE_TOP_K_BOUNDS, entropy_rule_k, fit_top_k_bounds, require, top_k_bounds


@pytest.fixture(scope="module")
def vocab() -> Vocab:
    return Vocab.from_names(synthetic_vocabulary(), bos=0)


@pytest.fixture(scope="module")
def sampler(reference_dir):
    require(reference_dir, "sampler/sampler_states.json", "sampler/sampler_states.npz")
    meta = json.loads((reference_dir / "sampler" / "sampler_states.json").read_text())
    return meta, np.load(reference_dir / "sampler" / "sampler_states.npz")


def _keep(arrays, key: str) -> torch.Tensor:
    """A packed bit mask over the score bank's vocabulary, unpacked."""
    return torch.from_numpy(np.unpackbits(arrays[key])[: arrays["score_bank"].shape[1]].astype(bool))


def test_every_reference_state(sampler, vocab, reference_dir):
    meta, arrays = sampler
    k_min, k_max = top_k_bounds(reference_dir)
    bank = torch.from_numpy(arrays["score_bank"])
    for state_meta in meta["states"]:
        i = state_meta["index"]
        ids = torch.from_numpy(arrays[f"s{i:02d}_input_ids"]).long()
        scores = bank[state_meta["bank"]][None]
        state = initial_state([ids], vocab)
        assert bool(state.open[0]) == state_meta["image_open"], state_meta["name"]

        mm = image_grammar(scores, state, vocab)
        if state_meta["mm_forced_token"] >= 0:
            expected = torch.full_like(scores, float("-inf"))
            expected[0, state_meta["mm_forced_token"]] = 0.0
        else:
            expected = torch.where(_keep(arrays, f"s{i:02d}_mm_keep"), scores, float("-inf"))
        assert torch.equal(mm, expected), state_meta["name"]

        h = entropy(mm)
        assert abs(h.item() - state_meta["entropy"]) < 1e-4, state_meta["name"]
        for text_k, key in ((1, "topk_keep"), (10, "topk10_keep")):
            k = adaptive_top_k(h, state.open, text_top_k=text_k, k_min=k_min, k_max=k_max)
            if text_k == 1:
                assert int(k[0]) == state_meta["k"], state_meta["name"]
            values, ids = top_k_candidates(mm, k, k_cap=max(k_max, text_k))
            kept = torch.zeros(scores.shape[1], dtype=torch.bool)
            kept[ids[0][torch.isfinite(values[0])]] = True
            assert torch.equal(kept, _keep(arrays, f"s{i:02d}_{key}") & torch.isfinite(mm[0])), state_meta[
                "name"
            ]
            torch.testing.assert_close(
                values[0][torch.isfinite(values[0])], mm[0][ids[0]][torch.isfinite(values[0])]
            )


def test_entropy_to_k_table(reference_dir):
    name = "sampler/entropy_topk_table.npz"
    table = np.load(require(reference_dir, name) / name)
    h = torch.from_numpy(table["entropy"]).double()
    k_min, k_max = top_k_bounds(reference_dir)
    k = adaptive_top_k(h, torch.ones_like(h, dtype=torch.bool), text_top_k=1, k_min=k_min, k_max=k_max)
    assert k.tolist() == table["k"].astype(int).tolist()


@pytest.mark.parametrize("bounds", [PURE_TOP_K_BOUNDS, (5, 300), (1, 1), (40, 4000)])
def test_top_k_bounds_are_read_back_from_an_entropy_table(bounds):
    """Another fixture set may run the sampler with other k bounds: the golden tests fit them to its entropy
    table (a grid over [-1, 12], as the shared one) instead of assuming PURE's."""
    h = np.round(np.arange(-1.0, 12.0 + 1e-9, 0.01), 2)
    assert fit_top_k_bounds(h, entropy_rule_k(h, *bounds)) == bounds
    ours = adaptive_top_k(torch.from_numpy(h), torch.ones(len(h), dtype=torch.bool), 1, *bounds)
    assert ours.tolist() == entropy_rule_k(h, *bounds).tolist()


def test_state_advances_through_a_block(vocab):
    w_grids, h_grids = 1, 2
    block = [vocab.image_start, vocab.size_token(h_grids), vocab.size_token(w_grids)]
    state = initial_state([torch.tensor([vocab.bos, 10001])], vocab)
    forced = []
    for step in range(4 + 8 * 5):
        if step < 3:
            token = block[step]
        else:
            scores = image_grammar(torch.zeros(1, 73728), state, vocab)
            finite = torch.isfinite(scores[0])
            forced.append(int(finite.nonzero()[0]) if int(finite.sum()) == 1 else -1)
            token = int(finite.nonzero()[0])
        state = advance(state, torch.tensor([token]), vocab)
    assert not bool(state.open[0])
    assert forced.count(vocab.end_of_row) == 8 and forced[-1] == vocab.image_end
    assert [i for i, f in enumerate(forced) if f == vocab.end_of_row] == [4 + 5 * r for r in range(8)]


def test_a_prompt_and_a_step_read_a_malformed_size_alike(vocab):
    """An open image whose next token is not a size token: the prompt's state (initial_state) and a step's
    (advance) both count it as 0 grids (the prompt's read -4 rows)."""
    ids = [vocab.bos, vocab.image_start, 10001, vocab.size_token(2)]
    prompt = initial_state([torch.tensor(ids)], vocab)
    state = initial_state([torch.tensor(ids[:2])], vocab)
    for token in ids[2:]:
        state = advance(state, torch.tensor([token]), vocab)
    assert (int(prompt.h[0]), int(prompt.w[0])) == (int(state.h[0]), int(state.w[0])) == (0, 8)


def test_rows_at_different_positions(vocab):
    state = ImageState(
        open=torch.tensor([False, True, True]),
        n=torch.tensor([0, 1, 6]),
        h=torch.tensor([0, 8, 8]),
        w=torch.tensor([0, 0, 4]),
    )
    out = image_grammar(torch.zeros(3, 73728), state, vocab)
    assert torch.isfinite(out[0]).all() and torch.isfinite(out[1]).all()  # text and size tokens: free
    assert torch.isfinite(out[2]).sum() == 1 and out[2, vocab.end_of_row] == 0  # t = 4 = w: end of row


def test_guidance_formula_and_identity():
    cond, uncond = torch.randn(2, 50), torch.randn(2, 50)
    torch.testing.assert_close(guidance(cond, uncond, 0.8), 0.8 * (cond - uncond) + uncond)
    torch.testing.assert_close(guidance(cond, uncond, 1.0), cond)


def test_top_k_keeps_ties_and_per_row_k():
    scores = torch.tensor([[1.0, 3.0, 3.0, 2.0], [4.0, 1.0, 2.0, 3.0]])
    values, ids = top_k_candidates(scores, torch.tensor([1, 3]), k_cap=4)
    kept = [sorted(i[torch.isfinite(v)].tolist()) for v, i in zip(values, ids, strict=True)]
    assert kept == [[1, 2], [0, 2, 3]]


def test_top_k_keeps_ties_beyond_the_largest_k():
    """bf16 logits tie often: 60 scores equal to the 2000th largest (k = k_cap = 2000) are all kept, as the
    reference's ``scores < kth`` test keeps them; a list of exactly k_cap dropped 40 of them."""
    tied = torch.full((60,), 4.0)
    scores = torch.cat([torch.linspace(9.0, 5.0, 1980), tied, torch.linspace(3.0, -3.0, 3000)])
    scores = scores[torch.randperm(len(scores), generator=torch.Generator().manual_seed(0))][None]
    values, ids = top_k_candidates(scores, torch.tensor([2000]), k_cap=2000)
    kept = ids[0][torch.isfinite(values[0])]
    assert len(kept) == 2040 and set(kept.tolist()) == set((scores[0] >= 4.0).nonzero()[:, 0].tolist())


def test_draw_is_seeded_and_respects_mask():
    values, ids = top_k_candidates(
        torch.tensor([[0.0, float("-inf"), 1.0, float("-inf")]] * 2), torch.tensor([4, 4]), 4
    )
    u = counter_uniform(torch.tensor([1, 2]), torch.tensor(7), ids)
    assert torch.equal(u, counter_uniform(torch.tensor([1, 2]), 7, ids))
    assert ((u > 0) & (u < 1)).all() and not torch.equal(u[0], u[1])
    assert set(draw(values / 0.9, ids, u).tolist()) <= {0, 2}
