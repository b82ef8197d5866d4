"""Speculative decoding samples plain decoding's distribution: the verification rule on its own, the
targets the verify forward computes (cache rollback, masks, guidance), the token distribution over
many seeds for every draft source, batch independence, and a step with no host synchronisation."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from scipy.stats import chi2_contingency, chisquare

from pure.config import SamplingConfig
from pure.generate import _start, generate, use_guided_attention
from pure.sampling import counter_uniform, draw, probability_of
from pure.sequence import image_block, parse_image_block, split_answer
from pure.speculative import (
    ACCEPT_CELL,
    DRAFT_STREAM,
    SOURCES,
    _first,
    _iterate,
    _new_drafts,
    accepted_drafts,
    draft_probability,
    expected_run,
    generate_speculative,
    lq_blocks,
    lq_draft_probability,
    residual_scores,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_speculative import copy_prompt, small_model, small_vocabulary  # noqa: E402

SAMPLING = SamplingConfig(max_new_tokens=60, image_top_k_min=3, image_top_k_max=60)
"""PURE's sampler (guidance 0.8, temperature 0.9) with an entropy-adaptive k of 3-6 of the 8 codes."""
LAYOUT = dict(image_grids=(1, 1), max_text_tokens=2, stop_after_image=True)
"""A forced 32 px image (4 x 4 codes) after at most 2 tokens of text, as the pipeline calls the loop."""
DRAFTING = SOURCES[1:]


@pytest.fixture(scope="module")
def small():
    """A random model over 17 tokens (8 codes) whose logits are scaled up so that drafts are often
    accepted, and two prompts of different lengths (the second one writes text first)."""
    vocab = small_vocabulary(8)
    model = small_model(vocab)
    with torch.no_grad():
        model.lm_head.weight.mul_(30)
    generator = torch.Generator().manual_seed(0)
    lq = [torch.randint(0, 8, (4, 4), generator=generator) for _ in range(2)]
    prompts = [copy_prompt(vocab, lq[0]), copy_prompt(vocab, lq[1])[:-1]]
    return model, vocab, prompts


@pytest.mark.parametrize("kind", ["jacobi", "lq", "lq outside p"])
def test_verification_keeps_the_target_distribution(kind):
    """One position, 20,000 seeds: draft from q, test min(1, p/q), else draw from max(0, p - q); the
    token's frequencies match p (chi-square) and the acceptance rate is sum(min(p, q))."""
    n, index, vocab_size = 20000, 7, 12
    values = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0, float("-inf")]]).expand(n, -1) / 0.9
    ids = torch.tensor([[11, 3, 7, 0, 5, 2]]).expand(n, -1)
    if kind == "jacobi":
        q_values = torch.tensor([[0.0, 2.0, 1.0, 1.5, float("-inf")]]).expand(n, -1)
        q_ids = torch.tensor([[11, 3, 7, 9, 0]]).expand(n, -1)
    else:
        q_values = torch.tensor([[0.0]]).expand(n, 1)
        q_ids = torch.tensor([[3 if kind == "lq" else 9]]).expand(n, 1)
    seeds = torch.arange(n)
    x = draw(q_values, q_ids, counter_uniform(seeds, DRAFT_STREAM + index, q_ids))
    q_x, p_x = probability_of(q_values, q_ids, x), probability_of(values, ids, x)
    u = counter_uniform(seeds, index, torch.full((n, 1), ACCEPT_CELL))
    accepted = accepted_drafts(p_x[:, None], q_x[:, None], torch.ones(n, 1, dtype=torch.bool), u).bool()
    residual = residual_scores(values, draft_probability(ids, q_values, q_ids, vocab_size))
    token = torch.where(accepted, x, draw(residual, ids, counter_uniform(seeds, index, ids)))

    p = torch.softmax(values[0], -1).double()
    counts = torch.stack([(token == i).sum() for i in ids[0, :5]]).double()
    assert int(counts.sum()) == n  # the dropped candidate (2) and q's extra token (9) never come out
    assert chisquare(counts.numpy(), (p[:5] * n).numpy()).pvalue > 0.01
    q = torch.zeros(vocab_size).scatter_add_(0, q_ids[0], torch.softmax(q_values[0], -1))
    overlap = float(torch.minimum(torch.zeros(vocab_size).scatter_add_(0, ids[0], p.float()), q).sum())
    assert abs(float(accepted.double().mean()) - overlap) < 4 * (overlap * (1 - overlap) / n) ** 0.5 + 1e-9


@pytest.mark.parametrize(("source", "draft_len"), [(s, 4) for s in DRAFTING] + [("lq", 1), ("jacobi", 2)])
def test_drafts_are_tested_against_the_targets_plain_decoding_computes(small, source, draft_len):
    """Six rows of two prompt lengths, one writing text first, guidance on, drafts wherever possible
    (with one LQ draft per forward, each forced end-of-row is a whole window accepted, so the extra
    token after it is drawn too): every token's entropy, kept candidates and probability, taken from
    the verify forwards after accepts and rejections, equal plain decoding's when it is fed the same
    tokens (so the cache rolled back correctly); fewer forwards than tokens; the text is plain
    decoding's; the images well formed."""
    model, vocab, prompts = small
    prompts, seeds = prompts * 3, list(range(1, 7))
    out = generate_speculative(
        model, prompts, vocab, SAMPLING, source, draft_len, seeds, min_acceptance=0.0, **LAYOUT
    )
    fed = generate(model, prompts, vocab, SAMPLING, teacher=out.ids, **LAYOUT)
    plain = generate(model, prompts, vocab, SAMPLING, seeds=seeds, **LAYOUT)
    for b in range(len(prompts)):
        torch.testing.assert_close(out.p_token[b], fed.p_token[b], rtol=0, atol=1e-5)
        torch.testing.assert_close(out.entropy[b], fed.entropy[b], rtol=0, atol=1e-5)
        assert torch.equal(out.kept[b], fed.kept[b])
        assert (out.p_token[b] > 0).all()
        start = int((out.ids[b] == vocab.image_start).nonzero()[0])
        assert torch.equal(out.ids[b][:start], plain.ids[b][:start])
        assert split_answer(out.ids[b], _NoText(), vocab).codes.shape == (4, 4)
        assert out.forwards[b] < len(out.ids[b]) - 1
    assert sum(out.accepted) > 0 and sum(out.drafted) > sum(out.accepted)


SEEDS = 1000
"""Seeds per distribution test."""
POSITIONS = [3, 4, 5, 6, 9, 15, 20]
"""Answer positions compared: the image's first row, the row after it and its last row (after the
start and size tokens at 0-2; 7, 12, ... are forced end-of-row tokens)."""


@pytest.fixture(scope="module")
def likely_prompt(small) -> torch.Tensor:
    """The first prompt with its LQ block replaced by an image the model itself sampled, so that LQ
    drafts are often accepted (about 2 in 3, against 1 in 4 for random codes)."""
    model, vocab, prompts = small
    answer = generate(model, prompts[:1], vocab, SAMPLING, seeds=[0], **LAYOUT).ids[0]
    start = int((answer == vocab.image_start).nonzero()[0])
    return copy_prompt(vocab, parse_image_block(answer[start:], vocab))


@pytest.fixture(scope="module")
def plain_tokens(small, likely_prompt) -> torch.Tensor:
    """``[SEEDS, n]``: plain decoding's answers to ``likely_prompt`` with seeds 0..SEEDS-1."""
    model, vocab, _ = small
    return torch.stack(
        generate(model, [likely_prompt] * SEEDS, vocab, SAMPLING, list(range(SEEDS)), **LAYOUT).ids
    )


@pytest.mark.slow
@pytest.mark.parametrize("source", DRAFTING)
def test_token_distribution_equals_plain_sampling(small, likely_prompt, plain_tokens, source):
    """1000 other seeds (2000-2999) with drafts wherever possible: the tokens at seven positions follow
    plain decoding's distribution (chi-square over the (position, token) cells, p > 0.01). The same
    check with 4000 seeds on each side, position by position, found no deviation either."""
    model, vocab, _ = small
    seeds = list(range(2 * SEEDS, 3 * SEEDS))
    out = generate_speculative(
        model, [likely_prompt] * SEEDS, vocab, SAMPLING, source, 4, seeds, min_acceptance=0.0, **LAYOUT
    )
    assert sum(out.accepted) > 0.4 * sum(out.drafted)  # drafts were accepted in earnest

    def cells(tokens: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.bincount(tokens[:, j], minlength=vocab.size) for j in POSITIONS])

    table = torch.stack([cells(plain_tokens), cells(torch.stack(out.ids))])
    assert chi2_contingency(table[:, table.sum(0) > 0].numpy()).pvalue > 0.01


def test_without_drafts_the_tokens_are_plain_decodings(small):
    """A row that never drafts (no acceptance is good enough) draws exactly the plain loop's tokens."""
    model, vocab, prompts = small
    out = generate_speculative(model, prompts, vocab, SAMPLING, "lq", 4, [5, 6], min_acceptance=1.5, **LAYOUT)
    plain = generate(model, prompts, vocab, SAMPLING, seeds=[5, 6], **LAYOUT)
    assert all(torch.equal(a, b) for a, b in zip(out.ids, plain.ids, strict=True))
    assert out.drafted == [0, 0] and out.forwards == [len(ids) - 1 for ids in out.ids]


@pytest.mark.slow
@pytest.mark.parametrize("source", DRAFTING)
def test_batched_rows_equal_single_rows(small, source):
    """With the default rule (rows draft while their own drafts do well), 8 x 8 code images: a row's
    tokens and counts are the same in a batch and alone."""
    model, vocab, _ = small
    generator = torch.Generator().manual_seed(3)
    prompts = [copy_prompt(vocab, torch.randint(0, 8, (8, 8), generator=generator)) for _ in range(2)]
    prompts[1] = prompts[1][:-1]
    options = dict(source=source, draft_len=3, image_grids=(2, 2), max_text_tokens=2, stop_after_image=True)
    options["min_acceptance"] = 0.1
    batched = generate_speculative(model, prompts, vocab, SAMPLING, seeds=[7, 8], **options)
    assert sum(batched.drafted) > 0
    for b, prompt in enumerate(prompts):
        single = generate_speculative(model, [prompt], vocab, SAMPLING, seeds=[7 + b], **options)
        assert torch.equal(batched.ids[b], single.ids[0])
        assert (batched.forwards[b], batched.drafted[b]) == (single.forwards[0], single.drafted[0])


def test_lq_blocks_and_sizes(small):
    """The LQ draft is the prompt's first image block; a prompt without one has none (-1)."""
    _, vocab, prompts = small
    lq, h, w = lq_blocks([prompts[0], prompts[0][:5], prompts[1]], vocab)
    assert h.tolist() == [4, -1, 4] and w.tolist() == [4, -1, 4]
    assert torch.equal(lq[0], image_block(_codes(prompts[0], vocab), vocab))
    assert (lq[1] == vocab.end_of_row).all()


def test_lq_draft_probability_by_replay(small, likely_prompt):
    """The replay tool: per body token of the LQ block, a probability; end-of-row tokens are forced (1);
    LQ codes the model sampled itself are likelier than random ones; the tokens-per-forward estimate."""
    model, vocab, prompts = small
    likely = lq_draft_probability(model, likely_prompt, torch.zeros(0, dtype=torch.long), vocab, SAMPLING)
    random = lq_draft_probability(model, prompts[0], torch.zeros(0, dtype=torch.long), vocab, SAMPLING)
    assert likely.shape == random.shape == (4, 5)
    assert (likely[:, -1] == 1).all() and ((likely >= 0) & (likely <= 1)).all()
    assert likely[:, :-1].mean() > random[:, :-1].mean()
    assert expected_run(torch.ones(10), 2) == pytest.approx(2.9)  # windows of 2 from 10 starts: 19 / 10 + 1
    with pytest.raises(ValueError, match="no LQ image block"):
        lq_draft_probability(model, prompts[0][:3], torch.zeros(0, dtype=torch.long), vocab, SAMPLING)


def test_unknown_source_and_draft_length_are_refused(small):
    model, vocab, prompts = small
    with pytest.raises(ValueError, match="restore.speculative='lookahead' must be one of none, jacobi"):
        generate_speculative(model, prompts, vocab, SAMPLING, "lookahead")
    with pytest.raises(ValueError, match="restore.draft_len=0 must be at least 1"):
        generate_speculative(model, prompts, vocab, SAMPLING, "lq", draft_len=0)


@pytest.mark.slow
@pytest.mark.parametrize("kv_cache", ["model", "int8"])
def test_iteration_traces_as_one_graph(small, kv_cache):
    """torch.compile with fullgraph=True fails on any host synchronisation or data-dependent shape (what
    a CUDA graph cannot hold); the traced iterations, narrow and wide, give the eager ones' tokens, with
    the KV cache in the model's dtype and in int8 (restore.kv_cache)."""
    model, vocab, prompts = small
    outputs = []
    for compiled in (False, True):
        iterate = (
            torch.compile(_iterate, backend="eager", fullgraph=True, dynamic=False) if compiled else _iterate
        )
        with torch.inference_mode(), use_guided_attention(model):
            cache, d, rules = _start(
                model, prompts, vocab, SAMPLING, [1, 2], None, (1, 1), 2, True, 5, kv_cache
            )
            assert (cache.scales is not None) == (kv_cache == "int8")
            spec = _new_drafts(d, vocab, "lq+jacobi", 4, prompts, rules, 0.0)
            spec.allowed.fill_(4)
            _first(d, spec, rules)
            for width in (1, 5, 5, 5, 1, 5):
                iterate(model, cache, d, spec, rules, width, None)
        outputs.append((d.out_ids.clone(), d.length.clone()))
    assert torch.equal(outputs[0][1], outputs[1][1]) and int(outputs[0][1].min()) > 6
    assert torch.equal(outputs[0][0], outputs[1][0])


class _NoText:
    """A tokenizer stand-in for :func:`split_answer` on answers without text."""

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return ""


def _codes(prompt: torch.Tensor, vocab) -> torch.Tensor:
    start = int((prompt == vocab.image_start).nonzero()[0])
    return vocab.ids_to_codes(prompt[start + 3 : start + 3 + 20].view(4, 5)[:, :4])
