"""Token layout of PURE: image blocks and the one-turn conversation (SPEC section 2).

    [BOS] instruction LQ_BLOCK EOT answer_text HQ_BLOCK EOT

An image block is ``start, size(H), size(W), row_1 .. row_h, end`` where each row is ``w`` image
tokens followed by end-of-row; sizes count 32 px grids, so ``h = 4 * grids`` latent rows (ds-8).
There are no role tokens; each turn ends with the end-of-turn token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from pure.errors import PureError
from pure.vocab import CODE_PX, CODES_PER_GRID, GRID_PX, Vocab

INSTRUCTION = (
    "Perceive the degradation level, understand the image content, and restore the high-quality image. "
)
"""The fixed user instruction; the LQ image block follows it directly."""
IGNORE_INDEX = -100
"""Label of tokens that carry no loss (the whole user turn)."""


class TextTokenizer(Protocol):
    """What the layout needs of a text tokenizer (any transformers tokenizer fits)."""

    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...

    def decode(self, ids: list[int], skip_special_tokens: bool = ...) -> str: ...


class LayoutError(PureError, ValueError):
    """A token sequence does not follow PURE's layout."""


def block_length(h: int, w: int) -> int:
    """Tokens in the block of an ``h x w`` latent grid: 4 + h * (w + 1) (4164 for 64 x 64)."""
    return 4 + h * (w + 1)


def answer_length(tile: int, max_text_tokens: int) -> int:
    """The most tokens one ``tile`` px tile's answer can take: up to ``max_text_tokens`` of text (after which
    generation opens the image), then the tile's image block (``tile / 8`` codes a side). 4676 for a 512 px
    tile with 512 text tokens."""
    side = tile // CODE_PX
    return max_text_tokens + block_length(side, side)


def largest_tile(max_new_tokens: int, max_text_tokens: int) -> int:
    """The largest tile (a multiple of 32 px) whose whole answer fits in ``max_new_tokens``; 0 if none."""
    tile = 0
    while answer_length(tile + GRID_PX, max_text_tokens) <= max_new_tokens:
        tile += GRID_PX
    return tile


def image_block(codes: torch.Tensor, vocab: Vocab) -> torch.Tensor:
    """VQ codes ``[h, w]`` (h, w multiples of 4) -> token ids ``[4 + h * (w + 1)]`` int64."""
    if codes.ndim != 2:
        raise LayoutError(f"codes must be [h, w], got shape {tuple(codes.shape)}")
    h, w = codes.shape
    if h % CODES_PER_GRID or w % CODES_PER_GRID:
        raise LayoutError(
            f"latent size {h}x{w} is not a multiple of {CODES_PER_GRID} (images must be 32 px grids)"
        )
    rows = torch.cat([vocab.codes_to_ids(codes.long()), torch.full((h, 1), vocab.end_of_row)], dim=1)
    head = torch.tensor(
        [vocab.image_start, vocab.size_token(h // CODES_PER_GRID), vocab.size_token(w // CODES_PER_GRID)]
    )
    return torch.cat([head, rows.flatten(), torch.tensor([vocab.image_end])]).long()


def parse_image_block(ids: torch.Tensor, vocab: Vocab) -> torch.Tensor:
    """Token ids of one whole block ``[4 + h * (w + 1)]`` -> VQ codes ``[h, w]``; malformed -> LayoutError."""
    ids = ids.flatten().long().cpu()
    if len(ids) < 4 or ids[0] != vocab.image_start:
        raise LayoutError("an image block must start with the image-start token")
    h_grids, w_grids = (int(vocab.grids_of_id[i]) for i in ids[1:3])
    if h_grids <= 0 or w_grids <= 0:
        raise LayoutError(f"tokens {ids[1:3].tolist()} after image start are not size tokens")
    h, w = h_grids * CODES_PER_GRID, w_grids * CODES_PER_GRID
    if len(ids) != block_length(h, w):
        raise LayoutError(f"a {h}x{w} image block has {block_length(h, w)} tokens, got {len(ids)}")
    if ids[-1] != vocab.image_end:
        raise LayoutError("an image block must end with the image-end token")
    rows = ids[3:-1].view(h, w + 1)
    if (rows[:, -1] != vocab.end_of_row).any():
        bad = int((rows[:, -1] != vocab.end_of_row).nonzero()[0])
        raise LayoutError(f"row {bad} of the image block does not end with the end-of-row token")
    try:
        return vocab.ids_to_codes(rows[:, :-1])
    except ValueError as err:
        raise LayoutError(f"image block body holds non-image tokens: {err}") from err


@dataclass(frozen=True)
class Answer:
    """The assistant turn, split into its parts."""

    text: str
    """Everything before the HQ image: the degradation sentence and the description."""
    codes: torch.Tensor | None
    """``[h, w]`` VQ codes of the restored image, None when the answer holds no complete image."""


def encode_text(tokenizer: TextTokenizer, text: str) -> torch.Tensor:
    """Text -> token ids ``[n]`` without BOS/EOS (the layout adds its own specials)."""
    return torch.tensor(tokenizer.encode(text, add_special_tokens=False), dtype=torch.long)


def conversation(
    tokenizer: TextTokenizer,
    vocab: Vocab,
    lq_codes: torch.Tensor,
    answer_text: str = "",
    hq_codes: torch.Tensor | None = None,
    instruction: str = INSTRUCTION,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids ``[T]`` and loss labels ``[T]`` of one conversation.

    Without ``hq_codes`` the sequence is a prompt: it ends after the user's end-of-turn plus the
    given ``answer_text`` (empty: the model writes the whole answer). With ``hq_codes`` it is a
    training example ending in the HQ block and end-of-turn. Labels are -100 over the whole user
    turn (BOS, instruction, LQ block, its end-of-turn) and equal the ids elsewhere.
    """
    user = torch.cat(
        [
            torch.tensor([vocab.bos]),
            encode_text(tokenizer, instruction),
            image_block(lq_codes, vocab),
            torch.tensor([vocab.end_of_turn]),
        ]
    )
    parts = [encode_text(tokenizer, answer_text)] if answer_text else []
    if hq_codes is not None:
        parts += [image_block(hq_codes, vocab), torch.tensor([vocab.end_of_turn])]
    answer = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)
    ids = torch.cat([user, answer]).long()
    labels = torch.cat([torch.full_like(user, IGNORE_INDEX), answer]).long()
    return ids, labels


def split_answer(ids: torch.Tensor, tokenizer: TextTokenizer, vocab: Vocab) -> Answer:
    """Generated assistant ids ``[n]`` -> text and HQ codes (None when no well-formed image is there)."""
    ids = ids.flatten().long().cpu()
    stop = (ids == vocab.end_of_turn).nonzero()
    if len(stop):
        ids = ids[: int(stop[0])]
    starts = (ids == vocab.image_start).nonzero()
    if not len(starts):
        return Answer(text=tokenizer.decode(ids.tolist(), skip_special_tokens=True).strip(), codes=None)
    start = int(starts[0])
    text = tokenizer.decode(ids[:start].tolist(), skip_special_tokens=True).strip()
    ends = (ids[start:] == vocab.image_end).nonzero()
    if not len(ends):
        return Answer(text=text, codes=None)
    return Answer(text=text, codes=parse_image_block(ids[start : start + int(ends[0]) + 1], vocab))
