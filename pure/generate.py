"""The decode loop: prefill, then one token per step with a KV cache, guidance as one batched forward.

A batch holds ``B`` conditional rows (the prompts, left-padded) and, when guidance is on, ``B``
unconditional rows stacked below them, all in ONE forward per step over ``[cond; uncond]``.
An unconditional row is empty until its conditional row opens an image; from that image's start
token on it receives the same tokens with positions from 0 (SPEC section 5), and it is emptied
again when the image closes. "Empty" is expressed by the attention mask: every row keeps a flag
per cache column saying whether later tokens may attend to it, and a 4-D mask built from those
flags lets rows of one batch be at different places in their grammar.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from transformers import DynamicCache

from pure.config import SamplingConfig
from pure.sampling import (
    adaptive_top_k,
    advance,
    apply_temperature,
    draw,
    entropy,
    force_image_layout,
    guidance,
    image_grammar,
    initial_state,
    top_k_mask,
)
from pure.vocab import Vocab


@dataclass
class Generation:
    """Per prompt: the new token ids ``[n_b]`` (ending with end-of-turn unless the budget ran out),
    the entropy ``[n_b]`` of each step's scores, how many candidates the rules kept ``[n_b]``, and the
    probability ``[n_b]`` of the token that was chosen (or given, in :func:`replay`)."""

    ids: list[torch.Tensor]
    entropy: list[torch.Tensor]
    kept: list[torch.Tensor]
    p_token: list[torch.Tensor]


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


DECODE_ATTENTION = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
"""SDPA kernels for the loop. cuDNN's is left out: with a custom mask it builds a new graph for every
key length, which cost about 3 ms of CPU per attention call (60% of a 7B step) in our H100 profile."""


def _forward(model, ids, active, positions, cache) -> torch.Tensor:
    """Feed ``ids`` ``[R, q]``; return the last position's fp32 logits ``[R, V]``."""
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
def generate(
    model,
    prompts: list[torch.Tensor],
    vocab: Vocab,
    sampling: SamplingConfig,
    generators: list[torch.Generator] | None = None,
    teacher: list[torch.Tensor] | None = None,
    on_step: Callable[[int], None] | None = None,
    image_grids: tuple[int, int] | None = None,
    max_text_tokens: int = 512,
    stop_after_image: bool = False,
) -> Generation:
    """Sample an answer for every prompt ``[T_b]`` (token ids), or replay ``teacher`` continuations.

    ``generators``: one seeded ``torch.Generator`` per prompt (default: seeds ``sampling.seed + b``).
    ``teacher``: continuations ``[n_b]`` to feed instead of drawing (see :func:`replay`).
    ``on_step`` is called once per decoding step with the number of rows still running.
    ``image_grids``: force the answer's image to (height, width) 32 px grids, opening it after at
    most ``max_text_tokens`` of text (:func:`pure.sampling.force_image_layout`); None = the reference's
    free choice. ``stop_after_image``: a row also finishes when its image closes (what follows the
    image in PURE's answer is only the end-of-turn).
    """
    device = model.device
    batch = len(prompts)
    guided = sampling.cfg_scale != 1.0
    rows = 2 * batch if guided else batch
    if generators is None:
        generators = [torch.Generator(device).manual_seed(sampling.seed + b) for b in range(batch)]
    state = initial_state(prompts, vocab)
    if image_grids is not None:
        size_ids = (vocab.size_token(image_grids[0]), vocab.size_token(image_grids[1]))
    budget = [len(t) for t in teacher] if teacher is not None else [sampling.max_new_tokens] * batch

    # Prefill: conditional rows left-padded; unconditional rows hold the open image so far, if any.
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
        # 1-4: guidance, grammar, entropy-adaptive top-k, temperature (sampling.py)
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
        scores = apply_temperature(top_k_mask(scores, k), sampling.temperature)
        if teacher is not None:
            token = torch.tensor([t[min(step, len(t) - 1)] for t in teacher], device=device)
        else:
            token = draw(scores, generators)
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
        if on_step is not None:
            on_step(int(running.sum()))
        if not running.any():
            break

        # Feed the new token: conditional rows while running; unconditional rows while their image is open.
        new_active = torch.cat([running, state.open & running]) if guided else running.clone()
        if guided:
            active[batch:][closing.to(device)] = False  # image closed: reset the unconditional branch
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


def replay(
    model, prompt_ids: torch.Tensor, continuation_ids: torch.Tensor, vocab: Vocab, sampling: SamplingConfig
) -> Generation:
    """Feed a given continuation ``[n]`` after ``prompt_ids`` ``[T]`` under the sampling rules.

    Per step: the entropy, how many candidates the rules keep, and the probability of the given
    token (0 when the rules exclude it). Checks the sampler against a reference trajectory without
    random draws, and scores how likely the model finds an image.
    """
    return generate(model, [prompt_ids], vocab, sampling, teacher=[continuation_ids.flatten()])
