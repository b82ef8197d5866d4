"""PURE's vocabulary: special tokens by name, the image-token set, and VQ code <-> token id maps.

The only module that knows token names. Everything else asks a :class:`Vocab` for ids, so no
bare token id appears anywhere else in the project.

PURE's 73,728-entry vocabulary (Chameleon's, as extended by Lumina-mGPT) names its 16,384 image
tokens ``IMGIMG<digits as letters A-J><one more char>``; the VQ code of such a token is the
number spelled by the letters (A=0 ... J=9). The map comes from the names, never from
arithmetic on ids (the two halves of the image-token range are not contiguous).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

import torch

from pure.errors import PureError, error_reason

IMAGE_START = "<racm3:break>"
"""Opens an image block."""
IMAGE_END = "<eoss>"
"""Closes an image block."""
END_OF_ROW = "<reserved08799>"
"""Closes each row of latent codes inside an image block."""
END_OF_TURN = "<reserved08706>"
"""Ends a user or assistant turn; generation stops here."""
IMAGE_PREFIX = "IMGIMG"
"""Names of image tokens start with this."""
GRID_PX = 32
"""Size tokens count the image's height and width in grids of this many pixels."""
CODES_PER_GRID = 4
"""Latent rows (or columns) per grid with the ds-8 tokenizer: 32 px / 8 px."""
CODE_PX = GRID_PX // CODES_PER_GRID
"""Pixels covered by one latent code along each side (8: the VQ-8 tokenizer downsamples 8x)."""
CODEBOOK_SIZE = 16384
"""VQ-8 codebook entries, i.e. image tokens in the vocabulary."""
SIZE_TOKEN_BASE = 8800
"""The size token of n grids is ``<reserved{SIZE_TOKEN_BASE + n}>`` (SPEC section 1)."""

VOCAB_HELP = (
    "PURE reads image-token names from a Chameleon-style vocabulary. Provide one of: the tokenizer of "
    "`nonwhy/PURE` if it lists all IMGIMG entries, a `config.json` whose `vocabulary_map` does, or the "
    "reference's `text_tokenizer.json` (https://github.com/nonwhy/PURE/blob/main/pure/tokenizer/"
    "text_tokenizer.json) placed in the model folder."
)


class VocabError(PureError, ValueError):
    """The vocabulary lacks a special token or does not map every VQ code."""


def size_token_name(n_grids: int) -> str:
    """Name of the size token for an image ``n_grids * 32`` pixels high (or wide)."""
    return f"<reserved{SIZE_TOKEN_BASE + n_grids:05d}>"


def image_token_code(name: str) -> int:
    """``IMGIMGBAFZ`` -> 105: the VQ code spelled by the letters after the prefix."""
    letters = name[len(IMAGE_PREFIX) : -1]
    if not letters or any(not "A" <= c <= "J" for c in letters):
        raise VocabError(f"{name!r} is not an image-token name")
    return int("".join(str(ord(c) - ord("A")) for c in letters))


def image_token_name(code: int, last: str = "Z") -> str:
    """105 -> ``IMGIMGBAFZ``: inverse of :func:`image_token_code` (``last`` is the name's final char)."""
    return IMAGE_PREFIX + "".join(chr(ord("A") + int(d)) for d in str(code)) + last


@dataclass(frozen=True)
class Vocab:
    """Named token ids and code maps for one tokenizer.

    ``code_to_id``: ``[16384]`` int64, token id of each VQ code.
    ``id_to_code``: ``[vocab_size]`` int64, VQ code of each token id, -1 for non-image tokens.
    ``grids_of_id``: ``[vocab_size]`` int64, n of each size token ``<reserved{8800+n}>``, -1 otherwise.
    """

    size: int
    bos: int
    image_start: int
    image_end: int
    end_of_row: int
    end_of_turn: int
    code_to_id: torch.Tensor
    id_to_code: torch.Tensor
    grids_of_id: torch.Tensor
    is_image: torch.Tensor = field(init=False, repr=False)
    """``[vocab_size]`` bool, True at image tokens (derived from ``id_to_code``)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "is_image", self.id_to_code >= 0)

    @classmethod
    def from_names(
        cls, names: Mapping[str, int], bos: int, size: int | None = None, codebook_size: int = CODEBOOK_SIZE
    ) -> Vocab:
        """Build from a ``{token name: id}`` table (a tokenizer's ``get_vocab()``)."""
        size = size if size is not None else max(names.values()) + 1

        def need(name: str) -> int:
            if name not in names:
                raise VocabError(f"special token {name!r} is missing from the vocabulary. {VOCAB_HELP}")
            return names[name]

        code_to_id = torch.full((codebook_size,), -1, dtype=torch.long)
        id_to_code = torch.full((size,), -1, dtype=torch.long)
        grids_of_id = torch.full((size,), -1, dtype=torch.long)
        for name, idx in names.items():
            if name.startswith(IMAGE_PREFIX):
                code = image_token_code(name)
                if code >= codebook_size or idx >= size:
                    raise VocabError(f"image token {name!r} (id {idx}) is out of range")
                code_to_id[code] = idx
                id_to_code[idx] = code
            elif name.startswith("<reserved") and idx < size:
                number = int(name[len("<reserved") : -1]) if name[len("<reserved") : -1].isdigit() else -1
                if number > SIZE_TOKEN_BASE:
                    grids_of_id[idx] = number - SIZE_TOKEN_BASE
        missing = int((code_to_id < 0).sum())
        if missing:
            raise VocabError(
                f"the vocabulary maps {codebook_size - missing} of {codebook_size} VQ codes to IMGIMG names; "
                f"{missing} are missing. {VOCAB_HELP}"
            )
        return cls(
            size=size,
            bos=bos,
            image_start=need(IMAGE_START),
            image_end=need(IMAGE_END),
            end_of_row=need(END_OF_ROW),
            end_of_turn=need(END_OF_TURN),
            code_to_id=code_to_id,
            id_to_code=id_to_code,
            grids_of_id=grids_of_id,
        )

    def to(self, device: torch.device | str) -> Vocab:
        """The same vocabulary with its tables on ``device`` (the decode loop keeps them there)."""
        tables = {
            name: getattr(self, name).to(device) for name in ("code_to_id", "id_to_code", "grids_of_id")
        }
        return replace(self, **tables)

    def size_token(self, n_grids: int) -> int:
        """Token id that says an image side is ``n_grids * 32`` pixels."""
        hits = (self.grids_of_id.cpu() == n_grids).nonzero()
        if len(hits) != 1:
            raise VocabError(
                f"no size token {size_token_name(n_grids)} for {n_grids} grids in the vocabulary"
            )
        return int(hits[0])

    @cached_property
    def image_ids(self) -> torch.Tensor:
        """``[16384]`` sorted token ids of all image tokens."""
        return self.code_to_id.sort().values

    def codes_to_ids(self, codes: torch.Tensor) -> torch.Tensor:
        """VQ codes (any shape, int64) -> token ids (same shape)."""
        return self.code_to_id.to(codes.device)[codes]

    def ids_to_codes(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids (any shape) -> VQ codes; raises if any id is not an image token."""
        codes = self.id_to_code.to(ids.device)[ids]
        if (codes < 0).any():
            bad = ids[codes < 0][:5].tolist()
            raise VocabError(f"token ids {bad} are not image tokens")
        return codes


def image_names_from_files(folder: Path) -> dict[str, int]:
    """Image-token names from a model folder's ``text_tokenizer.json`` or ``config.json`` ``vocabulary_map``.

    Returns an empty dict when neither file lists IMGIMG entries.
    """
    candidates = [
        (folder / "text_tokenizer.json", lambda d: d.get("model", {}).get("vocab", {})),
        (folder / "config.json", lambda d: d.get("vocabulary_map") or {}),
    ]
    for path, pick in candidates:
        if path.is_file():
            try:
                table = pick(json.loads(path.read_text(encoding="utf-8")))
            except (UnicodeDecodeError, ValueError, AttributeError) as err:  # AttributeError: not an object
                raise VocabError(
                    f"{path} is not readable ({error_reason(err)}): it is damaged or incomplete; "
                    "download or copy it again"
                ) from err
            names = {k: int(v) for k, v in table.items() if k.startswith(IMAGE_PREFIX)}
            if names:
                return names
    return {}
