"""The decode loop: prefill, then one token per step into a static KV cache, guidance as one batched forward.

A batch holds ``B`` conditional rows (the prompts, left-padded) and, when guidance is on, ``B``
unconditional rows stacked below them, all in ONE forward per step over ``[cond; uncond]``.
An unconditional row holds only the image its conditional row is drawing: from the image's start
token on it receives the same tokens with positions from 0 (SPEC section 5), and it starts over
when the image closes. The cache (:mod:`pure.kv_cache`) is allocated once, sized from the known
answer length, and written in place.

Everything a step does after the prefill - guidance, grammar, top-k, the draw, the grammar state, the
finished flags, the output buffers - is tensor work on the model's device with fixed shapes
(:func:`_step`), so on CUDA the whole step, model included, is captured once as a CUDA graph and
replayed. The host reads the finished flags only every :data:`SYNC_EVERY` steps and copies the
outputs back once.

Randomness: the token of row ``b`` at answer step ``s`` is a Gumbel-max draw over the kept candidates
whose uniform numbers are ``counter_uniform(seed_b, s, token id)`` (:mod:`pure.sampling`), a pure
function of the seed, the step and the candidate. A row's tokens therefore depend only on its seed,
its prompt and the model, never on the other rows of the batch, the batch size or graph capture.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from pure.config import SamplingConfig
from pure.kv_cache import CACHE_ARG, KV_CACHE_MODES, GuidedKVCache, KVWrite, use_guided_attention
from pure.sampling import (
    ImageState,
    adaptive_top_k,
    advance,
    counter_uniform,
    draw,
    entropy,
    force_image_layout,
    guidance,
    image_grammar,
    initial_state,
    probability_of,
    top_k_candidates,
)
from pure.sequence import block_length
from pure.vocab import CODES_PER_GRID, Vocab

DECODE_ATTENTION = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
"""SDPA kernels for the loop. cuDNN's is left out: with a custom mask it builds a new graph for every
key length, which cost about 3 ms of CPU per attention call (60% of a 7B step) in an H100 profile of
the loop before this one (this loop has not run on a GPU yet)."""
SYNC_EVERY = 16
"""Decoding steps between two host reads of the finished flags (a finished batch runs at most this
many steps too many)."""
WARMUP_STEPS = 2
"""Eager steps on a side stream before a CUDA graph is captured (they initialise kernel workspaces)."""


@dataclass
class Generation:
    """Per prompt: the new token ids ``[n_b]`` (ending with end-of-turn unless the budget ran out),
    the entropy ``[n_b]`` of each step's scores, how many candidates the rules kept ``[n_b]``, and the
    probability ``[n_b]`` of the token that was chosen (or given, in :func:`replay`).
    ``warmup_s``: seconds spent before the first decoding step (prefill, and graph capture when on)."""

    ids: list[torch.Tensor]
    entropy: list[torch.Tensor]
    kept: list[torch.Tensor]
    p_token: list[torch.Tensor]
    warmup_s: float = 0.0


@dataclass
class _Decode:
    """The device-resident state of one batch, updated in place by :func:`_step` (a CUDA graph reads
    and writes fixed addresses). ``R`` = ``2B`` rows with guidance, ``B`` without; ``S`` steps at most."""

    logits: torch.Tensor  # [R, V] fp32 next-token logits of every row
    state: ImageState  # [B] grammar state of the conditional rows
    step: torch.Tensor  # [] int64: answer tokens written so far
    running: torch.Tensor  # [B] bool
    length: torch.Tensor  # [B] int64: answer tokens of each row
    budget: torch.Tensor  # [B] int64: token budget of each row
    seeds: torch.Tensor  # [B] int64
    teacher: torch.Tensor | None  # [B, S] int64 tokens to feed instead of drawing
    prompt_len: torch.Tensor  # [B] int64: real (unpadded) prompt tokens of each row
    pad: torch.Tensor  # [B] int64: left-padding columns of each row
    out_ids: torch.Tensor  # [B, S] int64
    out_entropy: torch.Tensor  # [B, S] fp32
    out_kept: torch.Tensor  # [B, S] int64
    out_p: torch.Tensor  # [B, S] fp32


@dataclass(frozen=True)
class _Rules:
    """Everything a step needs that does not change during a batch."""

    vocab: Vocab
    sampling: SamplingConfig
    guided: bool
    size_ids: tuple[int, int] | None
    max_text_tokens: int
    stop_after_image: bool
    prompt_cols: int  # L: columns of the (left-padded) prompts
    first_uncond: int  # largest unconditional position written by the prefill (-1: none)


def cache_lengths(
    prompt_cols: int, steps: int, open_tail: int, image_grids: tuple[int, int] | None
) -> tuple[int, int]:
    """Columns of the conditional and unconditional caches.

    Conditional rows hold the prompt (``prompt_cols``, left-padded) and ``steps`` answer tokens.
    Unconditional rows hold one image: with ``image_grids`` known and no image open in the prompt,
    its block minus the closing token (the position of a block's last cached token); otherwise the
    ``open_tail`` tokens of an image open in the prompt plus ``steps``. At least one column each.
    """
    if image_grids is not None and open_tail == 0:
        h, w = (g * CODES_PER_GRID for g in image_grids)
        uncond = min(steps, block_length(h, w) - 1)
    else:
        uncond = open_tail + steps
    return prompt_cols + steps, max(uncond, 1)


def _forward(model, ids: torch.Tensor, positions: torch.Tensor, cache: GuidedKVCache) -> torch.Tensor:
    """Feed ``ids`` ``[R, q]`` at ``positions`` ``[R, q]`` as ``cache.plan`` says; the last position's
    fp32 logits ``[R, V]``."""
    out = model(
        input_ids=ids, position_ids=positions, cache=cache, use_cache=True, logits_to_keep=1, kv_cache=cache
    )  # PureChameleon.forward takes ``cache`` under either transformers name
    return out.logits[:, -1].float()


def _prefill(model, prompts, state: ImageState, cache: GuidedKVCache, rules: _Rules, pad_id: int):
    """Fill the cache with the prompts; return the logits ``[R, V]`` after them.

    Conditional rows: the prompts left-padded to ``L`` columns, positions from 0 at each prompt's first
    token. Unconditional rows (guided only): each open image's tokens so far (start token included)
    at columns and positions from 0; rows without an open image get one throw-away column.
    """
    device, batch = model.device, len(prompts)
    cols = rules.prompt_cols
    ids = torch.full((batch, cols), pad_id, dtype=torch.long)
    pad = torch.tensor([cols - len(p) for p in prompts])
    for b, prompt in enumerate(prompts):
        ids[b, pad[b] :] = prompt.cpu()
    column = torch.arange(cols)
    positions = (column[None] - pad[:, None]).clamp(min=0)
    mask = None  # prompts of one length: plain causal attention
    if int(pad.max()):
        causal = column[None, :] <= column[:, None]
        mask = (causal[None] & (column[None, None] >= pad[:, None, None])) | torch.eye(cols, dtype=torch.bool)
        mask = mask[:, None].to(device)
    cache.plan = KVWrite(batch, cond_cols=column.to(device), cond_mask=mask, cond_limit=cols)
    logits = _forward(model, ids.to(device), positions.to(device), cache)
    if not rules.guided:
        return logits
    if rules.first_uncond < 0:  # no image open yet: the unconditional logits are not used before one opens
        return torch.cat([logits, torch.zeros_like(logits)])

    tails = [
        p[len(p) - 1 - int(n) :].cpu() if bool(o) else p[-1:].cpu()
        for p, o, n in zip(prompts, state.open, state.n, strict=True)
    ]
    width = max(len(t) for t in tails)
    ids = torch.full((batch, width), pad_id, dtype=torch.long)
    for b, tail in enumerate(tails):
        ids[b, : len(tail)] = tail
    column = torch.arange(width)
    cache.plan = KVWrite(0, uncond_cols=column.expand(batch, width).to(device), uncond_limit=width)
    hidden = model.model(
        input_ids=ids.to(device),
        position_ids=column.expand(batch, width).to(device),
        use_cache=True,
        kv_cache=cache,
        **{CACHE_ARG: cache},
    ).last_hidden_state
    last = torch.tensor([len(t) - 1 for t in tails], device=device)
    uncond = model.lm_head(hidden[torch.arange(batch, device=device), last]).float()
    return torch.cat([logits, uncond])


def _start(
    model,
    prompts,
    vocab,
    sampling,
    seeds,
    teacher,
    image_grids,
    max_text_tokens,
    stop_after_image,
    extra=0,
    kv_cache="model",
):
    """Size and allocate the cache and the buffers of one batch, and prefill (arguments as :func:`generate`;
    call inside :func:`use_guided_attention`). ``extra``: columns added to both caches and to the
    output buffers (room for the drafts of :mod:`pure.speculative`). Returns (cache, decode state, rules)."""
    device, batch = model.device, len(prompts)
    guided = sampling.cfg_scale != 1.0
    seeds = [sampling.seed + b for b in range(batch)] if seeds is None else list(seeds)
    for name, given in (("seeds", seeds), ("teacher", teacher)):
        if given is not None and len(given) != batch:
            raise ValueError(f"{name} has {len(given)} entries for {batch} prompts; give one per prompt")
    budget = [len(t) for t in teacher] if teacher is not None else [sampling.max_new_tokens] * batch
    steps = max(budget)
    if image_grids is not None and stop_after_image and teacher is None:
        h, w = (g * CODES_PER_GRID for g in image_grids)
        steps = min(steps, max_text_tokens + block_length(h, w))
    state = initial_state(prompts, vocab)
    open_tail = int((state.n + 1)[state.open].max()) if guided and bool(state.open.any()) else 0
    cols = max(len(p) for p in prompts)
    cond_len, uncond_len = cache_lengths(cols, steps, open_tail, image_grids)
    uncond_len = uncond_len + extra if guided else 0
    if kv_cache not in KV_CACHE_MODES:
        raise ValueError(f"restore.kv_cache={kv_cache!r} must be one of {', '.join(KV_CACHE_MODES)}")
    int8 = kv_cache == "int8"
    cache = GuidedKVCache(model.config, batch, cond_len + extra, uncond_len, model.dtype, device, int8)
    size_ids = (vocab.size_token(image_grids[0]), vocab.size_token(image_grids[1])) if image_grids else None
    rules = _Rules(
        vocab.to(device), sampling, guided, size_ids, max_text_tokens, stop_after_image, cols, open_tail - 1
    )
    logits = _prefill(model, prompts, state, cache, rules, vocab.end_of_turn)
    on_device = lambda values: torch.tensor(values, dtype=torch.long, device=device)  # noqa: E731
    if teacher is not None:
        # rows past their continuation repeat its last token (end-of-turn for an empty one): never read
        rows = [t.cpu().long() for t in teacher]
        pads = [t[-1:] if len(t) else torch.tensor([vocab.end_of_turn]) for t in rows]
        padded = [torch.cat([t, pad.expand(steps - len(t))]) for t, pad in zip(rows, pads, strict=True)]
        teacher = torch.stack(padded)
    d = _Decode(
        logits=logits,
        state=state.to(device),
        step=on_device(0),
        running=on_device(budget) > 0,  # an empty continuation: a row with nothing to write
        length=torch.zeros(batch, dtype=torch.long, device=device),
        budget=on_device(budget),
        seeds=on_device(seeds),
        teacher=None if teacher is None else teacher.to(device),
        prompt_len=on_device([len(p) for p in prompts]),
        pad=on_device([cols - len(p) for p in prompts]),
        out_ids=torch.full((batch, steps + extra), vocab.end_of_turn, dtype=torch.long, device=device),
        out_entropy=torch.zeros(batch, steps + extra, device=device),
        out_kept=torch.zeros(batch, steps + extra, dtype=torch.long, device=device),
        out_p=torch.zeros(batch, steps + extra, device=device),
    )
    return cache, d, rules


def _candidates(
    cond: torch.Tensor, uncond: torch.Tensor, state: ImageState, step: torch.Tensor | int, rules: _Rules
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rules 1-4 of SPEC section 5 up to the draw, for ``N`` rows at grammar ``state`` (``[N]``).

    ``cond``/``uncond``: ``[N, V]`` fp32 logits (``uncond`` is read only with guidance); ``step``: the
    answer index of the token being chosen (``[N]`` or a scalar). Returns the tempered candidate scores
    ``[N, K]`` (-inf for dropped candidates), their token ids ``[N, K]`` and the entropy ``[N]`` (nats)
    of the scores before top-k."""
    vocab, sampling = rules.vocab, rules.sampling
    scores = cond
    if rules.guided:
        scores = torch.where(state.in_body[:, None], guidance(cond, uncond, sampling.cfg_scale), cond)
    scores = image_grammar(scores, state, vocab)
    if rules.size_ids is not None:
        scores = force_image_layout(
            scores, state, step, vocab.image_start, rules.size_ids, rules.max_text_tokens
        )
    h = entropy(scores)
    k = adaptive_top_k(h, state.open, sampling.text_top_k, sampling.image_top_k_min, sampling.image_top_k_max)
    values, candidates = top_k_candidates(scores, k, max(sampling.image_top_k_max, sampling.text_top_k))
    return values / sampling.temperature, candidates, h


def _step(model, cache: GuidedKVCache, d: _Decode, rules: _Rules, limits: tuple[int, int] | None) -> None:
    """One decoding step for every row, entirely on the device: sample from ``d.logits`` (1-4 of SPEC
    section 5), record, advance the grammar, feed the token, leave the next logits in ``d.logits``.

    ``limits``: cache columns attention reads (conditional, unconditional); None reads them all, the
    fixed shapes a CUDA graph needs.
    """
    vocab, state, batch, s = rules.vocab, d.state, len(d.seeds), d.step
    values, candidates, h = _candidates(d.logits[:batch], d.logits[batch:], state, s, rules)
    if d.teacher is not None:
        token = d.teacher.index_select(1, s.clamp(max=d.teacher.shape[1] - 1).view(1))[:, 0]
    else:
        token = draw(values, candidates, counter_uniform(d.seeds, s, candidates))

    column = s.view(1, 1).expand(batch, 1)
    d.out_ids.scatter_(1, column, token[:, None])
    d.out_entropy.scatter_(1, column, h[:, None])
    d.out_kept.scatter_(1, column, torch.isfinite(values).sum(-1, keepdim=True))
    d.out_p.scatter_(1, column, probability_of(values, candidates, token)[:, None])
    d.length.add_(d.running.long())
    closing = state.open & (token == vocab.image_end)
    running = d.running & (token != vocab.end_of_turn) & (s + 1 < d.budget)
    if rules.stop_after_image:
        running = running & ~closing
    new = advance(state, token, vocab)
    for old, value in zip(
        (state.open, state.n, state.h, state.w), (new.open, new.n, new.h, new.w), strict=True
    ):
        old.copy_(value)
    d.running.copy_(running)

    # Feed the token: conditional rows at column L + s; unconditional rows at their image position
    # (0 while no image is open: a throw-away column that the next image start overwrites).
    cond_limit, uncond_limit = limits or (cache.cond_k.shape[3], cache.uncond_k.shape[3])
    cond_col = rules.prompt_cols + s
    key = torch.arange(cond_limit, device=s.device)
    cond_mask = (key[None] >= d.pad[:, None]) & (key[None] <= cond_col)
    positions = d.prompt_len + s
    fed = token
    plan = KVWrite(
        batch, cond_cols=cond_col.view(1), cond_mask=cond_mask[:, None, None], cond_limit=cond_limit
    )
    if rules.guided:
        upos = torch.where(new.open, new.n, 0).clamp(max=cache.uncond_k.shape[3] - 1)
        key = torch.arange(uncond_limit, device=s.device)
        plan.uncond_cols, plan.uncond_limit = upos[:, None], uncond_limit
        plan.uncond_mask = (key[None] <= upos[:, None])[:, None, None]
        positions, fed = torch.cat([positions, upos]), torch.cat([token, token])
    cache.plan = plan
    d.logits.copy_(_forward(model, fed[:, None], positions[:, None], cache))
    d.step.add_(1)


def _eager_limits(cache: GuidedKVCache, rules: _Rules, step: int) -> tuple[int, int]:
    """Columns written before the token fed at ``step``, plus its own (eager mode reads only these)."""
    cond = rules.prompt_cols + step + 1
    uncond = rules.first_uncond + step + 2
    return min(cond, cache.cond_k.shape[3]), min(uncond, cache.uncond_k.shape[3])


@torch.inference_mode()
def generate(
    model,
    prompts: list[torch.Tensor],
    vocab: Vocab,
    sampling: SamplingConfig,
    seeds: list[int] | None = None,
    teacher: list[torch.Tensor] | None = None,
    on_step: Callable[[int], None] | None = None,
    image_grids: tuple[int, int] | None = None,
    max_text_tokens: int = 512,
    stop_after_image: bool = False,
    cuda_graph: bool = False,
    kv_cache: str = "model",
) -> Generation:
    """Sample an answer for every prompt ``[T_b]`` (token ids), or replay ``teacher`` continuations.

    ``seeds``: one integer per prompt (default: ``sampling.seed + b``); row b's draws depend only on
    its seed and step (module docstring). ``teacher``: continuations ``[n_b]`` to feed instead of
    drawing (see :func:`replay`). ``on_step`` is called every few steps with the number of steps done
    since its last call. ``image_grids``: force the answer's image to (height, width) 32 px grids,
    opening it after at most ``max_text_tokens`` of text (:func:`pure.sampling.force_image_layout`);
    None = the reference's free choice. ``stop_after_image``: a row also finishes when its image
    closes (what follows the image in PURE's answer is only the end-of-turn). ``cuda_graph``: capture
    the decoding step as a CUDA graph (CUDA only; the tokens are the same as without). ``kv_cache``:
    ``model`` stores keys and values in the model's dtype, ``int8`` as 8-bit codes with a scale per token
    and head (about half the memory; not exact, :mod:`pure.kv_cache`); ValueError otherwise. Drafting several
    tokens per forward: :func:`pure.speculative.generate_speculative`, which builds on this loop.
    """
    start = time.perf_counter()
    cuda_graph = cuda_graph and model.device.type == "cuda"
    with use_guided_attention(model), sdpa_kernel(DECODE_ATTENTION):
        cache, d, rules = _start(
            model,
            prompts,
            vocab,
            sampling,
            seeds,
            teacher,
            image_grids,
            max_text_tokens,
            stop_after_image,
            kv_cache=kv_cache,
        )
        steps, batch = d.out_ids.shape[1], len(prompts)
        done, graph = 0, None
        if cuda_graph:
            done, graph = _capture(model, cache, d, rules, min(WARMUP_STEPS, steps))
        warmup_s = time.perf_counter() - start
        reported = 0
        while done < steps:
            if graph is not None:
                graph.replay()
            else:
                _step(model, cache, d, rules, _eager_limits(cache, rules, done))
            done += 1
            if done % SYNC_EVERY == 0 or done == steps:
                if on_step is not None:
                    on_step(done - reported)
                    reported = done
                if not bool(d.running.any()):
                    break

    lengths = d.length.tolist()
    columns = [d.out_ids, d.out_entropy, d.out_kept, d.out_p]
    ids, h, kept, p = (c.cpu() for c in columns)
    return Generation(
        [ids[b, : lengths[b]] for b in range(batch)],
        [h[b, : lengths[b]].double() for b in range(batch)],
        [kept[b, : lengths[b]] for b in range(batch)],
        [p[b, : lengths[b]].double() for b in range(batch)],
        warmup_s,
    )


def _capture(model, cache: GuidedKVCache, d: _Decode, rules: _Rules, warmup: int, step: Callable = _step):
    """Run ``warmup`` real steps eagerly on a side stream, then capture the next step as a CUDA graph.

    Capturing records the kernels without running them, so the state after capture is the state
    after the warm-up steps. ``step``: called as :func:`_step` is (the speculative loop passes its
    own iteration). Returns (steps done, graph).
    """
    stream = torch.cuda.Stream(device=cache.cond_k.device)
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(warmup):
            step(model, cache, d, rules, None)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step(model, cache, d, rules, None)
    return warmup, graph


def replay(
    model, prompt_ids: torch.Tensor, continuation_ids: torch.Tensor, vocab: Vocab, sampling: SamplingConfig
) -> Generation:
    """Feed a given continuation ``[n]`` after ``prompt_ids`` ``[T]`` under the sampling rules.

    Per step: the entropy, how many candidates the rules keep, and the probability of the given
    token (0 when the rules exclude it). Checks the sampler against a reference trajectory without
    random draws, and scores how likely the model finds an image.
    """
    return generate(model, [prompt_ids], vocab, sampling, teacher=[continuation_ids.flatten()])
