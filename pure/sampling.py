"""PURE's per-step sampling rules as small pure functions over a batch of rows (SPEC section 5).

Applied to next-token scores ``[B, V]`` in this order by :mod:`pure.generate`:

1. :func:`guidance` - classifier-free guidance, only where an image is open past its size tokens;
2. :func:`image_grammar` - forced end-of-row / image-end, image tokens only inside a block;
3. :func:`entropy` then :func:`adaptive_top_k` and :func:`top_k_mask` - entropy-adaptive top-k
   inside images, fixed top-k (greedy in PURE) in text;
4. :func:`apply_temperature` and :func:`draw`.

The grammar position of every row is an :class:`ImageState`, advanced one token at a time.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pure.vocab import CODES_PER_GRID, Vocab

ENTROPY_EPS = 1e-10
"""``H = -sum p log(p + eps)``, as the reference computes it."""


@dataclass(frozen=True)
class ImageState:
    """Where each of ``B`` rows stands in the image grammar.

    ``open``: ``[B]`` bool, an image block is open. ``n``: ``[B]`` tokens since the open image's
    start token (0 right after it; 2 after both size tokens). ``h``, ``w``: ``[B]`` latent rows and
    columns of the open image (0 until its size tokens are known).
    """

    open: torch.Tensor
    n: torch.Tensor
    h: torch.Tensor
    w: torch.Tensor

    @property
    def in_body(self) -> torch.Tensor:
        """``[B]`` bool: open and past both size tokens (guidance and grammar apply)."""
        return self.open & (self.n >= 2)


def initial_state(prompts: list[torch.Tensor], vocab: Vocab) -> ImageState:
    """The state after each prompt ``[T_b]``: open when it has one more image start than image end."""
    open_, n, h, w = [], [], [], []
    for ids in prompts:
        ids = ids.cpu()
        is_open = int((ids == vocab.image_start).sum()) == int((ids == vocab.image_end).sum()) + 1
        s = int((ids == vocab.image_start).nonzero()[-1]) if is_open else 0
        count = len(ids) - s - 1 if is_open else 0
        grids = vocab.grids_of_id[ids[s + 1 : s + 3]] if is_open else torch.zeros(0, dtype=torch.long)
        open_.append(is_open)
        n.append(count)
        h.append(int(grids[0]) * CODES_PER_GRID if len(grids) > 0 else 0)
        w.append(int(grids[1]) * CODES_PER_GRID if len(grids) > 1 else 0)
    return ImageState(torch.tensor(open_), torch.tensor(n), torch.tensor(h), torch.tensor(w))


def advance(state: ImageState, tokens: torch.Tensor, vocab: Vocab) -> ImageState:
    """The state after appending ``tokens`` ``[B]`` to every row."""
    tokens = tokens.cpu()
    starts = tokens == vocab.image_start
    n = torch.where(starts, torch.zeros_like(state.n), state.n + 1)
    grids = vocab.grids_of_id[tokens].clamp(min=0) * CODES_PER_GRID
    h = torch.where(state.open & (n == 1), grids, state.h)
    w = torch.where(state.open & (n == 2), grids, state.w)
    open_ = (state.open | starts) & (tokens != vocab.image_end)
    return ImageState(open_, torch.where(open_, n, torch.zeros_like(n)), h, w)


def guidance(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """``scale * (cond - uncond) + uncond`` in fp32 (``[B, V]``); scale 1 returns ``cond``."""
    return scale * (cond.float() - uncond.float()) + uncond.float()


def force_tokens(scores: torch.Tensor, rows: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Rows where ``rows`` (``[B]`` bool) get -inf everywhere and 0.0 at ``tokens[b]``: the model's own
    logits are discarded, as the reference does. Other rows pass unchanged."""
    if not rows.any():
        return scores
    out = scores.clone()
    index = rows.nonzero()[:, 0]
    out[index.to(scores.device)] = float("-inf")
    out[index.to(scores.device), tokens[index].to(scores.device)] = 0.0
    return out


def image_grammar(scores: torch.Tensor, state: ImageState, vocab: Vocab) -> torch.Tensor:
    """Constrain rows inside an image body; other rows (text, size tokens) pass unchanged.

    With ``t = n - 2`` tokens after the size tokens: ``(t + 1) % (w + 1) == 0`` forces
    end-of-row, ``t + 1 == (w + 1) * h + 1`` forces image-end (score 0, all else -inf, the model's
    own logit discarded); otherwise only image tokens stay. ``scores``: ``[B, V]``.
    """
    body, t1, w1 = state.in_body, state.n - 1, state.w + 1
    force_row = body & (t1 % w1 == 0)
    force_end = body & ~force_row & (t1 == w1 * state.h + 1)
    inside = body & ~force_row & ~force_end
    if inside.any():
        outside = inside.to(scores.device)[:, None] & ~vocab.is_image.to(scores.device)[None]
        scores = scores.masked_fill(outside, float("-inf"))
    tokens = torch.where(force_row, vocab.end_of_row, vocab.image_end)
    return force_tokens(scores, force_row | force_end, tokens)


def force_image_layout(
    scores: torch.Tensor,
    state: ImageState,
    text_len: torch.Tensor,
    image_start: int,
    size_ids: tuple[int, int],
    max_text_tokens: int,
) -> torch.Tensor:
    """Make an answer's image the requested size: force the size tokens ``size_ids`` (height, width;
    from :meth:`Vocab.size_token`) after an image start, and force the image start once a row has written
    ``max_text_tokens`` of text. An extension for tiled restoration; the reference samples the size
    tokens freely. ``text_len``: ``[B]`` answer tokens written so far.
    """
    opening = ~state.open & (text_len >= max_text_tokens)
    first, second = state.open & (state.n == 0), state.open & (state.n == 1)
    tokens = torch.where(first, size_ids[0], torch.where(second, size_ids[1], image_start))
    return force_tokens(scores, opening | first | second, tokens)


def entropy(scores: torch.Tensor) -> torch.Tensor:
    """``[B, V]`` scores -> ``[B]`` entropy in nats of their softmax (fp32), ``-sum p log(p + 1e-10)``."""
    p = torch.softmax(scores.float(), dim=-1)
    return -(p * torch.log(p + ENTROPY_EPS)).sum(-1)


def adaptive_top_k(
    h: torch.Tensor, image_open: torch.Tensor, text_top_k: int, k_min: int = 1, k_max: int = 2000
) -> torch.Tensor:
    """``[B]`` k: inside an image ``round(k_min + (k_max - k_min) * sigmoid(clip(H, 0, 10) - 5))``
    (half to even, as the reference), in text ``text_top_k``."""
    k_image = torch.round(k_min + (k_max - k_min) * torch.sigmoid(h.double().clamp(0, 10) - 5)).long()
    k_image = k_image.clamp(k_min, k_max)
    return torch.where(image_open.to(h.device), k_image, torch.full_like(k_image, text_top_k))


def top_k_mask(scores: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Keep, per row, scores ``>=`` the row's k-th largest (ties at the threshold stay); ``k``: ``[B]``."""
    k = k.to(scores.device).clamp(1, scores.shape[-1])
    top = torch.topk(scores, int(k.max()), dim=-1).values
    threshold = top.gather(1, (k - 1)[:, None])
    return scores.masked_fill(scores < threshold, float("-inf"))


def apply_temperature(scores: torch.Tensor, temperature: float) -> torch.Tensor:
    """``scores / temperature``."""
    return scores / temperature


def draw(scores: torch.Tensor, generators: list[torch.Generator]) -> torch.Tensor:
    """One draw per row from ``softmax(scores)``, row b with ``generators[b]``; ``[B]`` int64.

    Only the finite candidates (at most k after top-k) enter ``torch.multinomial``: the same
    distribution as a draw over the whole vocabulary, many times cheaper.
    """
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
