"""Speculative decoding of the image block that keeps PURE's output distribution exactly.

Plain decoding (:mod:`pure.generate`) runs one forward per token. Here each forward feeds a row's
last decided token followed by up to ``K`` drafted tokens (``restore.draft_len``), in the same
batched ``[cond; uncond]`` forward and static KV cache, and the model's outputs at those ``K + 1``
positions verify the drafts, as speculative sampling does (Leviathan et al. 2023, Chen et al. 2023):

- the target ``p`` at every position is PURE's processed distribution - guidance, grammar,
  entropy-adaptive top-k and temperature (:func:`pure.generate._candidates`) - computed from the
  verify forward, i.e. given the drafted prefix;
- a draft ``x`` drawn from ``q`` is accepted with probability ``min(1, p(x) / q(x))``
  (:func:`accepted_drafts`); at the first rejection the token is drawn from ``norm(max(0, p - q))``
  instead (:func:`residual_scores`; for a deterministic draft that is ``p`` without ``x``), and when
  every draft is accepted one more token is drawn from ``p``. A forward thus decides 1 to ``K + 1``
  tokens of a row, each distributed exactly as plain sampling's. The output DISTRIBUTION is the plain
  loop's; the tokens of a given seed are not (the draws are used differently);
- the cache rolls back to the accepted prefix by itself: a row's length says which of its columns
  are real, the attention masks hide the rest, and the next forward overwrites them.

Draft sources (``restore.speculative``), used only inside an image body (text is decoded plainly):

- ``jacobi``: the previous forward's distributions at the next positions (computed after a prefix
  that held a rejected draft; where that forward did not reach, the distribution of the token just
  decided, a proxy: neighbouring codes are often alike), each sampled with Gumbel noise that is the
  same for a (seed, answer index, token) in every iteration, so a position's draft changes only when
  its distribution does (the Gumbel coupling of MC-SJD, So et al. 2025, arXiv 2510.24211);
- ``lq``: the LQ block's token at the same row and column (at x4 the input is upsampled to the tile
  before tokenising, so the LQ and HQ blocks share one grid); deterministic, so accepted with
  probability ``p(x)``. Rows whose image differs in size from their prompt's first image get none;
- ``lq+jacobi``: Jacobi drafts where the previous forward reached, LQ drafts beyond (proxies
  where a row has no LQ block of its image's size).

Randomness, keyed like the plain loop's (:func:`pure.sampling.counter_uniform`): at answer index
``i`` of a row, the acceptance test uses ``counter_uniform(seed, i, ACCEPT_CELL)``, the drawn token
the plain loop's Gumbel numbers ``counter_uniform(seed, i, token)``, and a Jacobi draft
``counter_uniform(seed, DRAFT_STREAM + i, token)``. Why this is exact: everything that decides the
tokens before index ``i`` (drafts, their distributions, earlier tests) is computed from outputs at
positions before ``i`` and from numbers keyed to indices before ``i``; so when index ``i`` is
decided, its draft is a fresh draw from the ``q`` it is tested against, and its test and draw
numbers are fresh too. Numbers computed for positions after a rejection are discarded unread. So a
row's tokens depend only on its seed, never on the batch.

Cost: a wide forward costs little more than a one-token forward on a GPU (whose decoding step is
bound by reading the weights) but about ``K + 1`` times as much on a CPU. Each row therefore drafts
only while the mean acceptance probability ``min(1, p(x)/q(x))`` of its recent drafts is at least
``min_acceptance`` (decided every :data:`DECIDE_EVERY` iterations, from the row's own history only,
so still batch-independent). With an ``lq`` source a row that is not drafting still learns
``p(LQ token)`` at every step for free; with a Jacobi source it drafts for :data:`PROBE_ITERATIONS`
iterations after :data:`PROBE_AFTER` iterations without drafts (after a failed probe, twice as long).
The host reads the rows' decisions and runs the iterations one token wide while no row drafts; with
CUDA graphs both widths are captured before any row may draft.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch.nn.attention import sdpa_kernel

from pure.config import SamplingConfig
from pure.generate import (
    DECODE_ATTENTION,
    WARMUP_STEPS,
    Generation,
    _candidates,
    _capture,
    _Decode,
    _Rules,
    _start,
    replay,
)
from pure.kv_cache import GuidedKVCache, KVWrite, use_guided_attention
from pure.sampling import ImageState, advance, candidate_width, counter_uniform, draw, probability_of
from pure.sequence import LayoutError, block_length, parse_image_block
from pure.vocab import Vocab

SOURCES = ("none", "jacobi", "lq", "lq+jacobi")
"""Values of ``restore.speculative``: no drafts, or where drafts come from (module docstring)."""
ACCEPT_CELL = 0xFFFFFFFF
"""The ``counter_uniform`` cell of the acceptance test (no token id is this large)."""
DRAFT_STREAM = 2**31
"""Jacobi drafts draw their Gumbel numbers at answer index ``DRAFT_STREAM + i`` (apart from the
numbers that decide tokens)."""
MIN_ACCEPTANCE = 0.25
"""Default ``min_acceptance``: a row drafts while its recent drafts' mean acceptance probability is
at least this (at 0.25 a full window of 8 drafts yields about 1.33 tokens per forward)."""
DECIDE_EVERY = 4
"""Iterations between two decisions of the rows (each one host read)."""
PROBE_AFTER = 64
"""Iterations without a tested draft after which a row measures Jacobi drafts again; after each probe
that fails, twice as many (up to :data:`MAX_PROBE_WAIT`)."""
MAX_PROBE_WAIT = 1024
"""The longest wait between two probes of a row."""
PROBE_ITERATIONS = 2
"""Iterations of such a probe (the first makes the Jacobi distributions, the second tests them)."""
DECAY = 0.75
"""Weight kept by the acceptance history at each decision (recent blocks count most)."""


@dataclass
class SpeculativeGeneration(Generation):
    """:class:`pure.generate.Generation` plus, per prompt: model forwards after the prefill while the row
    ran, draft tokens tested and draft tokens accepted."""

    forwards: list[int] = field(default_factory=list)
    drafted: list[int] = field(default_factory=list)
    accepted: list[int] = field(default_factory=list)


@dataclass
class _Drafts:
    """Device state of the drafting, per row (``B`` rows, ``K`` drafts, ``C`` Jacobi candidates; ``C`` is
    1 for the ``lq`` source, which keeps no distributions), updated in place like :class:`_Decode`."""

    source: str
    min_acceptance: float
    pending: torch.Tensor  # [B] int64: the last decided token, not yet fed
    jacobi_values: torch.Tensor  # [B, K, C] tempered scores at the next K answer indices
    jacobi_ids: torch.Tensor  # [B, K, C] their token ids
    jacobi_real: torch.Tensor  # [B, K] bool: the previous forward computed that index's distribution
    lq: torch.Tensor  # [B, Lq] int64: the prompt's first image block, padded
    lq_h: torch.Tensor  # [B] int64: its latent rows (-1: the prompt has none)
    lq_w: torch.Tensor  # [B] int64: its latent columns
    allowed: torch.Tensor  # [B] int64: drafts a row may use per iteration now (0 or K)
    probing: torch.Tensor  # [B] bool: the row drafts to measure, for PROBE_ITERATIONS iterations
    seen: torch.Tensor  # [B] fp32: sum of the expected acceptance of recent Jacobi drafts (decayed)
    seen_n: torch.Tensor  # [B] fp32: how many (decayed)
    lq_seen: torch.Tensor  # [B] fp32: the same for LQ drafts, made or (not drafting) not made
    lq_n: torch.Tensor  # [B] fp32: how many (decayed)
    idle: torch.Tensor  # [B] int64: iterations since the row last tested a draft
    probe_wait: torch.Tensor  # [B] int64: idle iterations before the next Jacobi probe
    forwards: torch.Tensor  # [B] int64
    drafted: torch.Tensor  # [B] int64
    accepted: torch.Tensor  # [B] int64


class _Window(NamedTuple):
    """The drafts of one forward, ``[B, D]`` each (draft ``j`` is for answer index ``length + j``)."""

    x: torch.Tensor  # int64 draft tokens
    jacobi: torch.Tensor  # bool: drawn from a Jacobi distribution (else deterministic: LQ)
    q_x: torch.Tensor  # fp32: the probability it was drafted with (1 when deterministic)
    valid: torch.Tensor  # bool: it may be tested (a prefix of each row)
    q_values: torch.Tensor  # [B, D, Cq] the Jacobi distributions' tempered scores
    q_ids: torch.Tensor  # [B, D, Cq] and token ids


def accepted_drafts(
    p_x: torch.Tensor, q_x: torch.Tensor, valid: torch.Tensor, u: torch.Tensor
) -> torch.Tensor:
    """``[B]`` number of leading drafts accepted: draft ``j`` passes when ``u < p(x) / q(x)``.

    ``p_x``: ``[B, D]`` target probability of each draft; ``q_x``: ``[B, D]`` the probability it was
    drafted with (1 for a deterministic draft); ``valid``: ``[B, D]`` bool, a draft exists (a prefix of
    the row); ``u``: ``[B, D]`` uniforms in (0, 1).
    """
    accept = valid & (u * q_x < p_x)
    return accept.long().cumprod(1).sum(1)


def draft_probability(
    ids: torch.Tensor, q_values: torch.Tensor, q_ids: torch.Tensor, vocab_size: int
) -> torch.Tensor:
    """``[N, C]`` the draft distribution ``q = softmax(q_values)`` over ``q_ids`` (``[N, Cq]``; a
    deterministic draft ``x`` is ``[0, -inf, ...]`` at ``[x, ...]``) at the token ids ``ids``
    (``[N, C]``, a target's candidates); ``vocab_size`` bounds every id."""
    dense = torch.zeros(len(ids), vocab_size, device=ids.device)
    return dense.scatter_add_(1, q_ids, torch.softmax(q_values.float(), -1)).gather(1, ids)


def residual_scores(values: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``log max(0, p - q)``, the scores a rejected position draws from.

    ``values``: ``[N, C]`` the target's tempered candidate scores (``p = softmax(values)``); ``q``:
    ``[N, C]`` the draft distribution at those candidates (:func:`draft_probability`). Returns
    ``[N, C]`` (-inf where ``p <= q``); a row where ``p <= q`` everywhere (``p == q``: rejection has
    probability 0, only rounding gets there) keeps ``values``.
    """
    rest = (torch.softmax(values.float(), -1) - q).clamp(min=0)
    return torch.where(rest.sum(-1, keepdim=True) > 0, rest.log(), values)


def lq_blocks(prompts: list[torch.Tensor], vocab: Vocab) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each prompt's first complete image block (PURE's LQ image), padded with end-of-row to one length:
    ids ``[B, Lq]``, and its latent rows and columns ``[B]`` (-1 where a prompt has no valid block)."""
    blocks, hs, ws = [], [], []
    for ids in prompts:
        ids = ids.cpu()
        starts = (ids == vocab.image_start).nonzero()[:, 0]
        ends = (ids == vocab.image_end).nonzero()[:, 0]
        ends = ends[ends > starts[0]] if len(starts) else ends[:0]
        try:
            block = ids[int(starts[0]) : int(ends[0]) + 1] if len(ends) else ids[:0]
            h, w = parse_image_block(block, vocab).shape
        except LayoutError:
            block, h, w = ids[:0], -1, -1
        blocks.append(block)
        hs.append(h)
        ws.append(w)
    width = max(1, *(len(b) for b in blocks))
    lq = torch.full((len(prompts), width), vocab.end_of_row, dtype=torch.long)
    for b, block in enumerate(blocks):
        lq[b, : len(block)] = block
    return lq, torch.tensor(hs), torch.tensor(ws)


def _fields(state: ImageState) -> tuple[torch.Tensor, ...]:
    return state.open, state.n, state.h, state.w


def _draft(d: _Decode, spec: _Drafts, count: int) -> _Window:
    """Drafts for the next ``count`` answer indices of every row (:class:`_Window`): valid inside the
    image body, within the row's allowance and budget; Jacobi draws (MC-SJD's Gumbel coupling: the
    same numbers for an index in every iteration) and LQ tokens as ``spec.source`` says."""
    state, device = d.state, d.seeds.device
    j = torch.arange(count, device=device)
    index = d.length[:, None] + j
    n = state.n[:, None] + j  # grammar position before draft j, while every draft is a body token
    in_body = state.open[:, None] & (n >= 2) & (n <= (state.w[:, None] + 1) * state.h[:, None] + 2)
    ok = in_body & (j < spec.allowed[:, None]) & (index < d.budget[:, None]) & d.running[:, None]
    values, ids = spec.jacobi_values[:, :count], spec.jacobi_ids[:, :count]
    lq_ok = ((spec.lq_h == state.h) & (spec.lq_w == state.w))[:, None]
    x = spec.lq.gather(1, (n + 1).clamp(0, spec.lq.shape[1] - 1))  # offset n + 1 of the LQ block
    jacobi = torch.zeros_like(ok)
    q_x = torch.ones(x.shape, device=device)
    if spec.source != "lq":
        flat_values, flat_ids = values.flatten(0, 1), ids.flatten(0, 1)
        u = counter_uniform(d.seeds.repeat_interleave(count), (index + DRAFT_STREAM).flatten(), flat_ids)
        drawn = draw(flat_values, flat_ids, u)
        q_drawn = probability_of(flat_values, flat_ids, drawn).view(x.shape)
        real = spec.jacobi_real[:, :count]
        jacobi = real | ~lq_ok if spec.source == "lq+jacobi" else torch.ones_like(ok)
        x, q_x = torch.where(jacobi, drawn.view(x.shape), x), torch.where(jacobi, q_drawn, q_x)
    valid = (ok & (lq_ok | (spec.source != "lq"))).long().cumprod(1).bool()
    return _Window(x, jacobi, q_x, valid, values, ids)


def _forward_window(
    model, cache: GuidedKVCache, d: _Decode, rules: _Rules, fed, index, states: ImageState, limits
) -> torch.Tensor:
    """Feed ``fed`` ``[B, W]`` (answer indices ``index`` ``[B, W]``; ``states`` ``[B, W]`` the grammar
    state after each) to every row, conditional rows at their own columns, unconditional rows at
    their image positions; the fp32 logits ``[R, W, V]`` after each token."""
    batch, width = fed.shape
    cond_limit, uncond_limit = limits or (cache.cond_k.shape[3], cache.uncond_k.shape[3])
    cols = rules.prompt_cols + index
    key = torch.arange(cond_limit, device=fed.device)
    mask = (key >= d.pad[:, None, None]) & (key <= cols[..., None])
    plan = KVWrite(batch, cond_cols=cols, cond_mask=mask[:, None], cond_limit=cond_limit)
    positions, ids = d.prompt_len[:, None] + index, fed
    if rules.guided:
        # An image token at its position (tokens since the image's start); anything else - text, and
        # drafts past the image's end - in the last column, which no image position reaches.
        scratch = cache.uncond_k.shape[3] - 1
        ucols = torch.where(states.open & (states.n < scratch), states.n, scratch)
        key = torch.arange(uncond_limit, device=fed.device)
        plan.uncond_cols, plan.uncond_limit = ucols, uncond_limit
        plan.uncond_mask = (key <= ucols[..., None])[:, None]
        positions, ids = torch.cat([positions, ucols]), torch.cat([fed, fed])
    cache.plan = plan
    out = model(
        input_ids=ids,
        position_ids=positions,
        cache=cache,
        use_cache=True,
        logits_to_keep=width,
        kv_cache=cache,
    )  # PureChameleon.forward takes ``cache`` under either transformers name
    return out.logits.float()


def _emit(d: _Decode, spec: _Drafts, rules: _Rules, tokens, last, values, candidates, h, before: ImageState):
    """Record the tokens of slots ``0..last`` of every running row and move the row past them.

    ``tokens`` ``[B, W]`` (slot ``j`` is answer index ``length + j``), ``last`` ``[B]``, the
    distributions each token was chosen from (``values``/``candidates`` ``[B, W, C]``, entropy ``h``
    ``[B, W]``) and the grammar state before each (``before``, ``[B, W]``). A row stops after an
    end-of-turn, its budget, or (``stop_after_image``) its image's end, as in :func:`pure.generate._step`.
    """
    vocab, (batch, width) = rules.vocab, tokens.shape
    slot = torch.arange(width, device=tokens.device)
    index = d.length[:, None] + slot
    d.out_ids.scatter_(1, index, tokens)
    d.out_entropy.scatter_(1, index, h)
    d.out_kept.scatter_(1, index, torch.isfinite(values).sum(-1))
    p = probability_of(values.flatten(0, 1), candidates.flatten(0, 1), tokens.flatten())
    d.out_p.scatter_(1, index, p.view(batch, width))
    stop = (tokens == vocab.end_of_turn) | (index + 1 >= d.budget[:, None])
    if rules.stop_after_image:
        stop = stop | (before.open & (tokens == vocab.image_end))
    stop = stop & (slot <= last[:, None])
    last = torch.where(stop.any(1), stop.long().argmax(1), last)

    def pick(t: torch.Tensor) -> torch.Tensor:
        return t[:, 0] if width == 1 else t.gather(1, last[:, None])[:, 0]

    token = pick(tokens)
    new = advance(ImageState(*(pick(t) for t in _fields(before))), token, vocab)
    for old, value in zip(_fields(d.state), _fields(new), strict=True):
        old.copy_(torch.where(d.running, value, old))
    spec.pending.copy_(torch.where(d.running, token, spec.pending))
    d.length.add_(torch.where(d.running, last + 1, 0))
    d.running.copy_(d.running & ~stop.any(1))


def _first(d: _Decode, spec: _Drafts, rules: _Rules) -> None:
    """Draw every row's first answer token from the prefill's logits, as the plain loop does."""
    batch = len(d.seeds)
    values, candidates, h = _candidates(d.logits[:batch], d.logits[batch:], d.state, d.step, rules)
    token = draw(values, candidates, counter_uniform(d.seeds, d.step, candidates))
    before = ImageState(*(t[:, None] for t in _fields(d.state)))
    last = torch.zeros_like(token)
    _emit(d, spec, rules, token[:, None], last, values[:, None], candidates[:, None], h[:, None], before)
    if spec.source != "lq":
        _keep_jacobi(spec, values[:, None], candidates[:, None], last)


def _iterate(
    model, cache: GuidedKVCache, d: _Decode, spec: _Drafts, rules: _Rules, width: int, limits
) -> None:
    """One forward of ``width`` tokens per row (its pending token, then ``width - 1`` drafts), the
    verification, and the next Jacobi distributions; entirely on the device with fixed shapes.

    ``limits``: cache columns attention reads (conditional, unconditional); None reads them all.
    """
    batch, vocab, count = len(d.seeds), rules.vocab, width - 1
    slot = torch.arange(width, device=d.seeds.device)
    fed = spec.pending[:, None]
    if count:
        window = _draft(d, spec, count)
        fed = torch.cat([fed, torch.where(window.valid, window.x, vocab.end_of_row)], 1)  # none: inert
    states = [d.state]
    for j in range(1, width):
        states.append(advance(states[-1], fed[:, j], vocab))
    before = ImageState(*(torch.stack(parts, 1) for parts in zip(*map(_fields, states), strict=True)))
    index = d.length[:, None] - 1 + slot  # answer index of each fed token; slot j chooses index + 1
    logits = _forward_window(model, cache, d, rules, fed, index, before, limits)
    flat = ImageState(*(t.flatten() for t in _fields(before)))
    values, candidates, h = _candidates(
        logits[:batch].flatten(0, 1), logits[batch:].flatten(0, 1), flat, (index + 1).flatten(), rules
    )
    values, candidates = values.view(batch, width, -1), candidates.view(batch, width, -1)
    h, running = h.view(batch, width), d.running.clone()

    last, tested = torch.zeros_like(d.length), torch.zeros_like(running)
    scores, ids = values[:, 0], candidates[:, 0]  # the token at slot ``last`` is drawn from these
    if count:
        last, tested, scores, ids = _verify(d, spec, window, values, candidates, vocab, logits.shape[-1])
    if spec.source != "jacobi":
        _learn_lq(d, spec, values[:, 0], candidates[:, 0], running & ~tested, vocab)
    spec.idle.copy_(torch.where(tested, 0, spec.idle + 1))
    spec.forwards.add_(running.long())

    tokens = torch.cat([window.x, window.x[:, -1:]], 1) if count else fed[:, :1]
    final = draw(scores, ids, counter_uniform(d.seeds, d.length + last, ids))
    tokens = torch.where(slot == last[:, None], final[:, None], tokens)
    _emit(d, spec, rules, tokens, last, values, candidates, h, before)

    if spec.source != "lq":
        _keep_jacobi(spec, values, candidates, last)


def _at(t: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
    """``t[b, j[b]]`` for ``t`` ``[B, W, ...]`` and ``j`` ``[B]``."""
    return t.gather(1, j.view(-1, 1, *([1] * (t.ndim - 2))).expand(-1, 1, *t.shape[2:]))[:, 0]


def _verify(d: _Decode, spec: _Drafts, window: _Window, values, candidates, vocab: Vocab, vocab_size: int):
    """Test every row's drafts (``window``, ``[B, D]``) against the targets of the verify forward.

    ``values``/``candidates`` ``[B, D + 1, C]``: the targets (slot ``j`` chooses answer index
    ``length + j``); ``vocab_size``: the model's (bounds every id). Records the expected acceptance of
    every decided draft. Returns ``last`` ``[B]`` (drafts accepted: the token at slot ``last`` is drawn
    next), ``tested`` ``[B]`` (the row decided a draft) and the scores and ids ``[B, C]`` to draw that
    token from: the target's, or ``max(0, p - q)`` after a rejection.
    """
    drafts, jacobi, q_x, valid, q_values, q_ids = window
    (batch, count), running = drafts.shape, d.running
    dirac = torch.full_like(q_values[0, 0], float("-inf"))  # a deterministic draft: q = 1 at x
    dirac[0] = 0.0
    q_values = torch.where(jacobi[..., None], q_values, dirac)
    q_ids = torch.cat([torch.where(jacobi, q_ids[..., 0], drafts)[..., None], q_ids[..., 1:]], -1)
    targets, target_ids = values[:, :count].flatten(0, 1), candidates[:, :count].flatten(0, 1)
    q = draft_probability(target_ids, q_values.flatten(0, 1), q_ids.flatten(0, 1), vocab_size)
    p_x = probability_of(targets, target_ids, drafts.flatten()).view(batch, count)
    index = d.length[:, None] + torch.arange(count, device=drafts.device)
    cell = torch.full((batch * count, 1), ACCEPT_CELL, device=drafts.device)
    u = counter_uniform(d.seeds.repeat_interleave(count), index.flatten(), cell).view(batch, count)
    last = accepted_drafts(p_x, q_x, valid, u)

    slot = torch.arange(count, device=drafts.device)
    decided = valid & (slot <= last[:, None]) & running[:, None]  # accepted, or the one rejected
    q = q.view(batch, count, -1)
    overlap = torch.minimum(torch.softmax(values[:, :count], -1), q).sum(-1)  # E[min(1, p(x) / q(x))]
    counted = decided & vocab.is_image[drafts]  # forced tokens pass in any case: not counted
    _remember(spec, overlap, counted & jacobi, overlap, counted & ~jacobi)
    spec.drafted.add_(decided.sum(1))
    spec.accepted.add_(torch.where(running, last, 0))

    j = last.clamp(max=count - 1)
    rejected = (last < count) & _at(valid, j)
    scores = torch.where(rejected[:, None], residual_scores(_at(values, j), _at(q, j)), _at(values, last))
    return last, decided.any(1), scores, _at(candidates, last)


def _learn_lq(d: _Decode, spec: _Drafts, values, candidates, rows, vocab: Vocab) -> None:
    """Record, for ``rows`` ``[B]`` inside an image of their LQ block's size, the probability
    (``values``/``candidates`` ``[B, C]``: the next token's target) of the LQ draft they did not make."""
    state = d.state
    lq_next = spec.lq.gather(1, (state.n + 1).clamp(0, spec.lq.shape[1] - 1)[:, None])[:, 0]
    p_lq = probability_of(values, candidates, lq_next)
    rows = rows & state.in_body & (spec.lq_h == state.h) & (spec.lq_w == state.w) & vocab.is_image[lq_next]
    _remember(spec, None, None, p_lq[:, None], rows[:, None])


def _remember(spec: _Drafts, jacobi, jacobi_counted, lq, lq_counted) -> None:
    """Add expected acceptances ``[B, D]`` of Jacobi and of LQ drafts, where counted, to the history."""
    for values, counted, total, n in (
        (jacobi, jacobi_counted, spec.seen, spec.seen_n),
        (lq, lq_counted, spec.lq_seen, spec.lq_n),
    ):
        if values is not None:
            total.add_(torch.where(counted, values, 0).sum(1))
            n.add_(counted.sum(1).float())


def _keep_jacobi(spec: _Drafts, values: torch.Tensor, candidates: torch.Tensor, last: torch.Tensor) -> None:
    """Store the distributions the next drafts come from: for the answer index ``m`` after the token
    decided at slot ``last``, this forward's output there if it reached it (slot ``last + 1 + m``, a
    real Jacobi distribution, for rows that drafted), else the decided token's own distribution (a
    proxy: neighbouring codes are often alike). ``values``/``candidates``: ``[B, W, C]``."""
    width = values.shape[1]
    source = last[:, None] + 1 + torch.arange(spec.jacobi_real.shape[1], device=last.device)
    real = (source < width) & (spec.allowed > 0)[:, None]  # rows that did not draft: as a narrow forward
    spec.jacobi_real.copy_(real)
    source = torch.where(real, source, last[:, None])[..., None].expand(-1, -1, values.shape[-1])
    spec.jacobi_values.copy_(values.gather(1, source))
    spec.jacobi_ids.copy_(candidates.gather(1, source))


def _wanted(spec: _Drafts) -> torch.Tensor:
    """``[B]`` bool: the row's recent Jacobi drafts, or its LQ drafts (made, or that it could have made),
    had a mean acceptance probability of at least ``min_acceptance`` (no history: only when it is 0)."""
    tested = (spec.seen >= spec.min_acceptance * spec.seen_n) & (spec.seen_n > 0)
    lq = (spec.lq_seen >= spec.min_acceptance * spec.lq_n) & (spec.lq_n > 0)
    return tested | lq | (spec.min_acceptance <= 0)


def _decide(d: _Decode, spec: _Drafts) -> list[int]:
    """Every row chooses from its own history whether it drafts until the next decision, or probes
    (module docstring), and the history decays. Returns, read on the host: [any running row drafts,
    any running row probes, any row running, longest row]."""
    wanted = _wanted(spec)
    probe = ~wanted & (spec.idle >= spec.probe_wait) & d.state.in_body & (spec.source != "lq")
    spec.allowed.copy_(torch.where(wanted | probe, spec.jacobi_real.shape[1], 0))
    spec.probing.copy_(probe)
    for history in (spec.seen, spec.seen_n, spec.lq_seen, spec.lq_n):
        history.mul_(DECAY)
    return _read(d, spec)


def _end_probes(d: _Decode, spec: _Drafts) -> list[int]:
    """:data:`PROBE_ITERATIONS` after a decision: a probing row drafts on if its drafts did well, else
    it waits twice as long before its next probe. Returns :func:`_read`'s flags."""
    kept = _wanted(spec)
    spec.allowed.copy_(torch.where(spec.probing & ~kept, 0, spec.allowed))
    wait = torch.where(kept, PROBE_AFTER, (2 * spec.probe_wait).clamp(max=MAX_PROBE_WAIT))
    spec.probe_wait.copy_(torch.where(spec.probing, wait, spec.probe_wait))
    spec.probing.fill_(False)
    return _read(d, spec)


def _read(d: _Decode, spec: _Drafts) -> list[int]:
    """Host flags: [any running row may draft, any running row probes, any row running, longest row]."""
    flags = [(spec.allowed > 0) & d.running, spec.probing & d.running, d.running]
    return torch.stack([f.any().long() for f in flags] + [d.length.max()]).tolist()


def _limits(cache: GuidedKVCache, rules: _Rules, longest: int, width: int) -> tuple[int, int]:
    """Columns an eager forward reads when no row holds more than ``longest`` answer tokens."""
    cond = rules.prompt_cols + longest + width - 1
    uncond = rules.first_uncond + longest + width
    return min(cond, cache.cond_k.shape[3]), min(max(uncond, 1), cache.uncond_k.shape[3])


@torch.inference_mode()
def generate_speculative(
    model,
    prompts: list[torch.Tensor],
    vocab: Vocab,
    sampling: SamplingConfig,
    source: str = "lq+jacobi",
    draft_len: int = 8,
    seeds: list[int] | None = None,
    on_step: Callable[[int], None] | None = None,
    image_grids: tuple[int, int] | None = None,
    max_text_tokens: int = 512,
    stop_after_image: bool = False,
    cuda_graph: bool = False,
    min_acceptance: float = MIN_ACCEPTANCE,
    kv_cache: str = "model",
) -> SpeculativeGeneration:
    """Sample an answer for every prompt ``[T_b]`` with drafts from ``source`` (:data:`SOURCES` but
    ``none``), up to ``draft_len`` per forward; the answers follow plain sampling's distribution.

    Arguments as :func:`pure.generate.generate` (``on_step`` gets the growth of the longest answer).
    ``min_acceptance`` in [0, 1]: a row drafts while its drafts' recent mean acceptance probability is
    at least this; 0 drafts wherever possible. Raises ValueError for an unknown source or a
    ``draft_len`` below 1.
    """
    if source not in SOURCES[1:]:
        raise ValueError(f"restore.speculative={source!r} must be one of {', '.join(SOURCES)}")
    if draft_len < 1:
        raise ValueError(f"restore.draft_len={draft_len} must be at least 1")
    start, wide = time.perf_counter(), draft_len + 1
    cuda_graph = cuda_graph and model.device.type == "cuda"
    with use_guided_attention(model), sdpa_kernel(DECODE_ATTENTION):
        cache, d, rules = _start(
            model,
            prompts,
            vocab,
            sampling,
            seeds,
            None,
            image_grids,
            max_text_tokens,
            stop_after_image,
            wide,
            kv_cache,
        )
        spec = _new_drafts(d, vocab, source, draft_len, prompts, rules, min_acceptance)
        _first(d, spec, rules)
        steps, graphs, done, longest = d.out_ids.shape[1] - wide, {}, 0, 1
        warmup_s = time.perf_counter() - start  # prefill (and, below, graph capture)
        for width in (1, wide):  # warm-up (and capture) of both widths, before any row may draft

            def step(model, cache, d, rules, limits, width=width):
                _iterate(model, cache, d, spec, rules, width, limits)

            if cuda_graph:
                ran, graphs[width] = _capture(model, cache, d, rules, WARMUP_STEPS, step)
            else:  # the same iterations, so that eager and graph runs decide alike
                for ran in range(1, WARMUP_STEPS + 1):
                    step(model, cache, d, rules, _limits(cache, rules, longest + (ran - 1) * width, width))
            done, longest = done + ran, longest + ran * width
        if cuda_graph:
            warmup_s = time.perf_counter() - start
        reported, decide_at, check_at = 0, done, -1
        while done < steps - 1:  # the first token is drawn; every iteration decides at least one more
            if done == decide_at:
                drafting, probing, running, longest = _decide(d, spec)
                if on_step is not None and longest > reported:
                    on_step(longest - reported)
                    reported = longest
                if not running:
                    break
                decide_at, check_at = done + DECIDE_EVERY, done + PROBE_ITERATIONS if probing else -1
                width = wide if drafting else 1
            elif done == check_at:
                drafting, _, _, longest = _end_probes(d, spec)
                width = wide if drafting else 1
            if cuda_graph:
                graphs[width].replay()
            else:
                _iterate(model, cache, d, spec, rules, width, _limits(cache, rules, longest, width))
            done, longest = done + 1, longest + width

    lengths = d.length.tolist()
    if on_step is not None and max(lengths) > reported:
        on_step(max(lengths) - reported)
    ids, h, kept, p = (c.cpu() for c in (d.out_ids, d.out_entropy, d.out_kept, d.out_p))
    return SpeculativeGeneration(
        [ids[b, : lengths[b]] for b in range(len(prompts))],
        [h[b, : lengths[b]].double() for b in range(len(prompts))],
        [kept[b, : lengths[b]] for b in range(len(prompts))],
        [p[b, : lengths[b]].double() for b in range(len(prompts))],
        warmup_s,
        forwards=spec.forwards.tolist(),
        drafted=spec.drafted.tolist(),
        accepted=spec.accepted.tolist(),
    )


def _new_drafts(
    d: _Decode, vocab: Vocab, source: str, draft_len: int, prompts, rules: _Rules, min_acceptance
):
    """The drafting state of a batch: no drafts allowed yet, no history, each prompt's LQ block."""
    batch, device, sampling = len(d.seeds), d.seeds.device, rules.sampling
    k_cap = max(sampling.image_top_k_max, sampling.text_top_k)
    width = 1 if source == "lq" else candidate_width(k_cap, d.logits.shape[-1])
    lq, lq_h, lq_w = lq_blocks(prompts, vocab)
    zeros = torch.zeros(batch, dtype=torch.long, device=device)
    return _Drafts(
        source=source,
        min_acceptance=min_acceptance,
        pending=zeros.clone(),
        jacobi_values=torch.full((batch, draft_len, width), float("-inf"), device=device),
        jacobi_ids=torch.zeros(batch, draft_len, width, dtype=torch.long, device=device),
        jacobi_real=torch.zeros(batch, draft_len, dtype=torch.bool, device=device),
        lq=lq.to(device),
        lq_h=lq_h.to(device),
        lq_w=lq_w.to(device),
        allowed=zeros.clone(),
        probing=torch.zeros(batch, dtype=torch.bool, device=device),
        seen=torch.zeros(batch, device=device),
        seen_n=torch.zeros(batch, device=device),
        lq_seen=torch.zeros(batch, device=device),
        lq_n=torch.zeros(batch, device=device),
        idle=torch.full((batch,), PROBE_AFTER, dtype=torch.long, device=device),
        probe_wait=torch.full((batch,), PROBE_AFTER, dtype=torch.long, device=device),
        forwards=zeros.clone(),
        drafted=zeros.clone(),
        accepted=zeros.clone(),
    )


def lq_draft_probability(
    model, prompt: torch.Tensor, text: torch.Tensor, vocab: Vocab, sampling: SamplingConfig
) -> torch.Tensor:
    """How likely the model finds the drafts of the ``lq`` source, by :func:`pure.generate.replay`.

    The answer ``text`` ``[n]`` (ids) followed by the prompt's own LQ block is fed after ``prompt``
    ``[T]``; returns, for each token of the block's body, the probability the processed distribution
    (guidance, grammar, top-k, temperature) gives it there: ``[h, w + 1]`` float64 in [0, 1], row by
    row, the last column the end-of-row tokens (1: forced). That is the acceptance probability of
    each LQ draft when every LQ draft before it was accepted. Raises ValueError when the prompt holds
    no image block.
    """
    lq, h, w = lq_blocks([prompt], vocab)
    if int(h[0]) < 0:
        raise ValueError("the prompt holds no LQ image block")
    h, w = int(h[0]), int(w[0])
    block = lq[0, : block_length(h, w)]
    p = replay(model, prompt, torch.cat([text.cpu().long(), block]), vocab, sampling).p_token[0]
    return p[len(text) + 3 : len(text) + len(block) - 1].view(h, w + 1)


def expected_run(p: torch.Tensor, draft_len: int) -> float:
    """Tokens per forward if windows of ``draft_len`` LQ drafts started anywhere along ``p`` (the flat
    acceptance probabilities of consecutive drafts, each given the ones before it accepted):
    ``1 + mean_i sum_{m=1..K} prod_{j<m} p[i + j]`` (an estimate: real windows start after rejections)."""
    p = p.flatten().double()
    total, run = torch.zeros_like(p), torch.ones_like(p)
    for m in range(draft_len):
        run = run * torch.cat([p[m:], torch.zeros(m, dtype=p.dtype)])
        total += run
    return 1.0 + float(total.mean())
