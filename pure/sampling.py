"""PURE's per-step sampling rules as small pure functions over a batch of rows (SPEC section 5).

Applied to next-token scores ``[B, V]`` in this order by :mod:`pure.generate`:

1. :func:`guidance` - classifier-free guidance, only where an image is open past its size tokens;
2. :func:`image_grammar` - forced end-of-row / image-end, image tokens only inside a block;
3. :func:`entropy` then :func:`adaptive_top_k` and :func:`top_k_candidates` - entropy-adaptive top-k
   inside images, fixed top-k (greedy in PURE) in text;
4. temperature and :func:`draw`, with the uniform numbers of :func:`counter_uniform`.

Every function is tensor operations on the scores' device with shapes fixed by the batch, the
vocabulary and ``k_max``: no host synchronisation and no data-dependent shapes, so a whole decoding
step can be captured as one CUDA graph. The grammar position of every row is an :class:`ImageState`,
advanced one token at a time.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pure.vocab import CODES_PER_GRID, Vocab

ENTROPY_EPS = 1e-10
"""``H = -sum p log(p + eps)``, as the reference computes it."""
ENTROPY_CEILING = 10.0
"""Entropies (nats) above this count as this in the adaptive top-k (the reference's clip)."""
ENTROPY_CENTRE = 5.0
"""Entropy (nats) at which the adaptive k is halfway between k_min and k_max (the sigmoid's centre)."""
TIE_ROOM = 256
"""Candidates listed beyond the largest k: room for scores tied with the k-th largest, which top-k keeps (the
reference drops only ``scores < kth``). bf16 logits tie often: of 16,384 normal random scores rounded to bf16
(no guidance), the 1,987th largest (k at high entropy) had up to 30 equal scores ranked after it, so a list of
exactly ``k_max`` = 2000 dropped some of them in 30-55% of such draws."""


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

    def to(self, device: torch.device | str) -> ImageState:
        """The same state with every tensor on ``device``."""
        return ImageState(*(t.to(device) for t in (self.open, self.n, self.h, self.w)))


def initial_state(prompts: list[torch.Tensor], vocab: Vocab) -> ImageState:
    """The state after each prompt ``[T_b]``: open when it has one more image start than image end; a
    token after the start that is not a size token counts as 0 grids, as in :func:`advance`."""
    open_, n, h, w = [], [], [], []
    for ids in prompts:
        ids = ids.cpu()
        is_open = int((ids == vocab.image_start).sum()) == int((ids == vocab.image_end).sum()) + 1
        s = int((ids == vocab.image_start).nonzero()[-1]) if is_open else 0
        count = len(ids) - s - 1 if is_open else 0
        grids = (
            vocab.grids_of_id.cpu()[ids[s + 1 : s + 3]].clamp(min=0)
            if is_open
            else torch.zeros(0, dtype=torch.long)
        )
        open_.append(is_open)
        n.append(count)
        h.append(int(grids[0]) * CODES_PER_GRID if len(grids) > 0 else 0)
        w.append(int(grids[1]) * CODES_PER_GRID if len(grids) > 1 else 0)
    return ImageState(torch.tensor(open_), torch.tensor(n), torch.tensor(h), torch.tensor(w))


def advance(state: ImageState, tokens: torch.Tensor, vocab: Vocab) -> ImageState:
    """The state after appending ``tokens`` ``[B]`` to every row (on the tokens' device)."""
    starts = tokens == vocab.image_start
    n = torch.where(starts, torch.zeros_like(state.n), state.n + 1)
    grids = vocab.grids_of_id.to(tokens.device)[tokens].clamp(min=0) * CODES_PER_GRID
    h = torch.where(state.open & (n == 1), grids, state.h)
    w = torch.where(state.open & (n == 2), grids, state.w)
    open_ = (state.open | starts) & (tokens != vocab.image_end)
    return ImageState(open_, torch.where(open_, n, torch.zeros_like(n)), h, w)


def guidance(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """``scale * (cond - uncond) + uncond`` in fp32 (``[B, V]``); scale 1 returns ``cond``."""
    return scale * (cond.float() - uncond.float()) + uncond.float()


def force_tokens(scores: torch.Tensor, rows: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Rows where ``rows`` (``[B]`` bool) get -inf everywhere and 0.0 at ``tokens[b]`` (``[B]``): the
    model's own logits are discarded, as the reference does. Other rows pass unchanged."""
    vocab = torch.arange(scores.shape[-1], device=scores.device)
    forced = torch.where(vocab[None] == tokens.to(scores.device)[:, None], 0.0, float("-inf"))
    return torch.where(rows.to(scores.device)[:, None], forced.to(scores.dtype), scores)


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
    tokens freely. ``text_len``: ``[B]`` (or a scalar) answer tokens written so far.
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
    weight = torch.sigmoid(h.double().clamp(0, ENTROPY_CEILING) - ENTROPY_CENTRE)
    k_image = torch.round(k_min + (k_max - k_min) * weight).long()
    k_image = k_image.clamp(k_min, k_max)
    return torch.where(image_open.to(h.device), k_image, torch.full_like(k_image, text_top_k))


def candidate_width(k_cap: int, vocab_size: int) -> int:
    """``K``, the length of :func:`top_k_candidates`' lists for ``k <= k_cap``: ``k_cap`` plus
    :data:`TIE_ROOM`, at most the vocabulary."""
    return min(k_cap + TIE_ROOM, vocab_size)


def top_k_candidates(scores: torch.Tensor, k: torch.Tensor, k_cap: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The candidates top-k keeps, per row, as a fixed-size list.

    ``scores``: ``[B, V]``; ``k``: ``[B]`` with ``1 <= k <= k_cap``. Returns ``values`` ``[B, K]``
    (descending, ``K = candidate_width(k_cap, V)``) and their token ids ``[B, K]``; a row keeps every score
    ``>=`` its k-th largest (ties at the threshold stay, as the reference's ``scores < kth`` test) and the
    rest of its list is -inf. Exact while a row has at most ``K`` scores at or above its threshold, i.e. at
    most :data:`TIE_ROOM` ties beyond ``k_cap``.
    """
    values, ids = torch.topk(scores, candidate_width(k_cap, scores.shape[-1]), dim=-1)
    k = k.to(scores.device).clamp(1, values.shape[-1])
    threshold = values.gather(1, (k - 1)[:, None])
    return values.masked_fill(values < threshold, float("-inf")), ids


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """``x * c mod 2**32`` for ``0 <= x, c < 2**32`` in int64 without overflow (16-bit halves)."""
    low = x * (c & 0xFFFF)
    high = ((x * (c >> 16)) & 0xFFFF) << 16
    return (low + high) & 0xFFFFFFFF


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """MurmurHash3's 32-bit finaliser: a bijection of ``[0, 2**32)`` that mixes every input bit."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x85EBCA6B)
    x = x ^ (x >> 13)
    x = _mul32(x, 0xC2B2AE35)
    return x ^ (x >> 16)


def counter_uniform(seeds: torch.Tensor, position: torch.Tensor | int, tokens: torch.Tensor) -> torch.Tensor:
    """Uniform numbers in ``(0, 1)``, a pure function of (seed, position, token id).

    ``seeds``: ``[B]`` int64 (the low 64 bits are used); ``position``: the answer step (a scalar
    tensor or int; 0 for the answer's first token); ``tokens``: ``[B, K]`` token ids in ``[0, 2**32)``.
    Returns ``[B, K]`` float64 with 53 random bits each. Counter-based, as Philox is: a row's numbers
    never depend on the other rows of a batch or on how many numbers were drawn before, and computing
    them needs no generator state, so the draw can live inside a captured CUDA graph.
    """
    lo, hi = seeds & 0xFFFFFFFF, (seeds >> 32) & 0xFFFFFFFF
    key = _mix32(_mix32(lo ^ 0x9E3779B9) ^ hi)
    counter = _mix32(key ^ (torch.as_tensor(position, device=seeds.device) & 0xFFFFFFFF))
    cell = _mix32(counter[:, None] ^ tokens)
    top = _mix32(cell ^ 0x243F6A88) >> 5  # 27 bits
    bottom = _mix32(cell ^ 0xB7E15162) >> 6  # 26 bits
    return ((top * 2**26 + bottom).double() + 0.5) / 2**53


def draw(values: torch.Tensor, ids: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """One draw per row from ``softmax(values)`` over its candidates (the Gumbel-max trick); ``[B]`` ids.

    ``values``: ``[B, K]`` tempered scores (-inf for dropped candidates, at least one finite);
    ``ids``: ``[B, K]`` their token ids; ``u``: ``[B, K]`` independent uniforms in ``(0, 1)``, one per
    candidate (:func:`counter_uniform` of its token id). ``argmax(values - log(-log(u)))`` is
    candidate ``j`` with probability ``softmax(values)[j]``. Because each token carries its own
    number, the choice does not depend on the order of the candidates, so two near-equal scores
    that swap places under rounding do not change the draw.
    """
    gumbel = -torch.log(-torch.log(u))
    return ids.gather(1, (values.double() + gumbel).argmax(-1, keepdim=True))[:, 0]


def probability_of(values: torch.Tensor, ids: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """``[B]`` probability of ``tokens`` ``[B]`` under ``softmax(values)`` over the candidates ``ids``
    (``[B, K]``); 0 when a token is not a candidate."""
    probs = torch.softmax(values.float(), dim=-1)
    return (probs * (ids == tokens[:, None])).sum(-1)
