"""The decode loop as it was before the static cache (kept as the baseline for speed and exactness).

A ``DynamicCache`` that grows by concatenation, a 4-D mask rebuilt from per-column activity flags on
every step, unconditional rows as long as the conditional ones, grammar state on the host, Python
loops over rows and several host reads per step, and a draw from one ``torch.Generator`` per row
(``draw_from="generators"``). With ``draw_from="counter"`` it draws with the library's counter-based
uniforms instead (:func:`pure.sampling.counter_uniform`), so its tokens can be compared one for one
with :func:`pure.generate.generate`.

Not part of the library: ``benchmarks/bench_generate.py`` times it and ``tests/test_decode_exact.py``
compares against it.
"""

from __future__ import annotations

import torch
from torch.nn.attention import sdpa_kernel
from transformers import DynamicCache

from pure.config import SamplingConfig
from pure.generate import DECODE_ATTENTION, Generation
from pure.sampling import (
    adaptive_top_k,
    advance,
    candidate_width,
    counter_uniform,
    draw,
    entropy,
    force_image_layout,
    guidance,
    image_grammar,
    initial_state,
)
from pure.vocab import Vocab


def top_k_mask(scores: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Keep, per row, scores ``>=`` the row's k-th largest (ties at the threshold stay); ``k``: ``[B]``."""
    k = k.to(scores.device).clamp(1, scores.shape[-1])
    top = torch.topk(scores, int(k.max()), dim=-1).values
    threshold = top.gather(1, (k - 1)[:, None])
    return scores.masked_fill(scores < threshold, float("-inf"))


def draw_with_generators(scores: torch.Tensor, generators: list[torch.Generator]) -> torch.Tensor:
    """One ``torch.multinomial`` draw per row over its finite scores, row b with ``generators[b]``."""
    tokens = []
    for b, generator in enumerate(generators):
        candidates = torch.isfinite(scores[b]).nonzero()[:, 0]
        if len(candidates) == 1:
            tokens.append(candidates)
            continue
        probs = torch.softmax(scores[b, candidates].float(), dim=-1)
        pick = torch.multinomial(probs.to(generator.device), 1, generator=generator).to(scores.device)
        tokens.append(candidates[pick])
    return torch.cat(tokens)


def _mask(active: torch.Tensor, queries: int, dtype: torch.dtype) -> torch.Tensor:
    """Additive attention mask ``[R, 1, q, K]`` from ``active`` ``[R, K]``: the last ``q`` columns are
    the queries; a query sees earlier active columns and always itself (so no row is fully masked)."""
    rows, cols = active.shape
    key = torch.arange(cols, device=active.device)
    query = key[-queries:, None]
    allowed = (active[:, None, :] & (key[None, None, :] <= query[None])) | (key[None, None, :] == query[None])
    return torch.zeros(allowed.shape, dtype=dtype, device=active.device).masked_fill(
        ~allowed, torch.finfo(dtype).min
    )[:, None]


def _forward(model, ids, active, positions, cache) -> torch.Tensor:
    mask = _mask(active, ids.shape[1], model.dtype)
    with sdpa_kernel(DECODE_ATTENTION):
        out = model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
        )
    return out.logits[:, -1].float()


@torch.inference_mode()
def baseline_generate(
    model,
    prompts: list[torch.Tensor],
    vocab: Vocab,
    sampling: SamplingConfig,
    seeds: list[int] | None = None,
    teacher: list[torch.Tensor] | None = None,
    image_grids: tuple[int, int] | None = None,
    max_text_tokens: int = 512,
    stop_after_image: bool = False,
    draw_from: str = "generators",
) -> Generation:
    """The former ``pure.generate.generate`` (same arguments but ``on_step``/``cuda_graph``)."""
    device = model.device
    batch = len(prompts)
    guided = sampling.cfg_scale != 1.0
    rows = 2 * batch if guided else batch
    seeds = [sampling.seed + b for b in range(batch)] if seeds is None else list(seeds)
    generators = [torch.Generator(device).manual_seed(s) for s in seeds]
    state = initial_state(prompts, vocab)
    if image_grids is not None:
        size_ids = (vocab.size_token(image_grids[0]), vocab.size_token(image_grids[1]))
    budget = [len(t) for t in teacher] if teacher is not None else [sampling.max_new_tokens] * batch
    k_cap = max(sampling.image_top_k_max, sampling.text_top_k)

    length = max(len(p) for p in prompts)
    ids = torch.full((rows, length), vocab.end_of_turn, dtype=torch.long)
    active = torch.zeros(rows, length, dtype=torch.bool)
    positions = torch.zeros(rows, length, dtype=torch.long)
    for b, prompt in enumerate(prompts):
        tails = [(b, prompt)]
        if guided and state.open[b]:
            tails.append((batch + b, prompt[len(prompt) - 1 - int(state.n[b]) :]))
        for row, tail in tails:
            ids[row, length - len(tail) :] = tail.cpu()
            active[row, length - len(tail) :] = True
            positions[row, length - len(tail) :] = torch.arange(len(tail))
    next_position = positions[:, -1] + 1
    active, positions = active.to(device), positions.to(device)
    cache = DynamicCache(config=model.config)
    logits = _forward(model, ids.to(device), active, positions, cache)

    out_ids, out_h, out_kept, out_p = ([[] for _ in range(batch)] for _ in range(4))
    running = torch.ones(batch, dtype=torch.bool)
    for step in range(max(budget)):
        scores = logits[:batch]
        if guided:
            guide = state.in_body.to(device)[:, None]
            scores = torch.where(guide, guidance(scores, logits[batch:], sampling.cfg_scale), scores)
        scores = image_grammar(scores, state, vocab)
        if image_grids is not None:
            text_len = torch.tensor([len(t) for t in out_ids])
            scores = force_image_layout(scores, state, text_len, vocab.image_start, size_ids, max_text_tokens)
        h = entropy(scores)
        k = adaptive_top_k(
            h, state.open.to(device), sampling.text_top_k, sampling.image_top_k_min, sampling.image_top_k_max
        )
        scores = top_k_mask(scores, k) / sampling.temperature
        if teacher is not None:
            token = torch.tensor([t[min(step, len(t) - 1)] for t in teacher], device=device)
        elif draw_from == "counter":
            values, candidates = torch.topk(scores, candidate_width(k_cap, scores.shape[-1]), dim=-1)
            token = draw(
                values, candidates, counter_uniform(torch.tensor(seeds, device=device), step, candidates)
            )
        else:
            token = draw_with_generators(scores, generators)
        p_token = torch.softmax(scores, dim=-1).gather(1, token[:, None])[:, 0]
        kept = torch.isfinite(scores).sum(-1)
        for b in running.nonzero()[:, 0].tolist():
            out_ids[b].append(int(token[b]))
            out_h[b].append(float(h[b]))
            out_kept[b].append(int(kept[b]))
            out_p[b].append(float(p_token[b]))
        token = token.cpu()
        closing = state.open & (token == vocab.image_end)
        state = advance(state, token, vocab)
        running &= (token != vocab.end_of_turn) & (torch.tensor(budget) > step + 1)
        if stop_after_image:
            running &= ~closing
        if not running.any():
            break

        new_active = torch.cat([running, state.open & running]) if guided else running.clone()
        if guided:
            active[batch:][closing.to(device)] = False
            next_position[batch:] = torch.where(state.open, state.n, 0)
        fed = torch.cat([token, token]) if guided else token
        active = torch.cat([active, new_active.to(device)[:, None]], dim=1)
        logits = _forward(model, fed[:, None].to(device), active, next_position[:, None].to(device), cache)
        next_position[:batch] += 1

    as_tensor = lambda values, dtype: [torch.tensor(v, dtype=dtype) for v in values]  # noqa: E731
    return Generation(
        as_tensor(out_ids, torch.long),
        as_tensor(out_h, torch.float64),
        as_tensor(out_kept, torch.long),
        as_tensor(out_p, torch.float64),
    )
