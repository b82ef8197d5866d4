"""Training examples from pre-tokenised shards.

Training reads what :mod:`pure.data.prepare` wrote: :class:`ShardDataset` gives one example's
``ids`` and ``labels``, and :func:`collate` truncates and pads a batch. Batches are not grouped by
length: every 512 px pair is about 8,400 tokens and differs only by its text (tens of tokens), and
the released recipe trains one sequence per GPU, so there is no padding to save.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors import safe_open

from pure.errors import PureError, from_here
from pure.images import is_image_name
from pure.sequence import IGNORE_INDEX


class DataError(PureError, FileNotFoundError):
    """Training data that is missing or damaged; the message names the file and the fix."""


class ShardDataset(torch.utils.data.Dataset):
    """The examples listed in ``<folder>/index.jsonl``; item i is ``{"ids": [T] int64, "labels": [T] int64}``.

    Shards are opened lazily, once per process (so DataLoader workers each keep their own handles),
    and only the example's slice is read.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        index = self.folder / "index.jsonl"
        if not index.is_file() and (self.folder.parent / "index.jsonl").is_file():  # data.shards=OUT/shards
            raise DataError(
                f"{index} not found: data.shards names the prepared folder itself, "
                f"data.shards={self.folder.parent}"
            )
        if not index.is_file() and self.folder.is_dir() and any(map(is_image_name, self.folder.iterdir())):
            raise DataError(
                f"data.shards={self.folder} holds images, not prepared shards: train on them with "
                f"data.hq_folder={self.folder} (and data.shards=), or prepare them first "
                f"(scripts/prepare_data.py --hq-dir {self.folder} --out DIR) and pass data.shards=DIR"
            )
        if self.folder.is_file():  # a photo or a manifest: no out_dir to prepare into
            raise DataError(
                f"data.shards={self.folder} is a file; set it to the folder scripts/prepare_data.py wrote "
                "(its out_dir, with index.jsonl)"
            )
        if not index.is_file():
            raise DataError(
                f"{from_here(index)} not found: run scripts/prepare_data.py with out_dir={self.folder}"
            )
        self.records = []
        for number, line in enumerate(index.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    self.records.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise DataError(
                        f"{index}, line {number}: not JSON ({err.msg}); rerun scripts/prepare_data.py on "
                        f"{self.folder}"
                    ) from err
        if not self.records:
            raise DataError(
                f"{index} lists no examples: run scripts/prepare_data.py with out_dir={self.folder}"
            )
        self._handles: dict[str, object] = {}
        for shard in sorted({r["shard"] for r in self.records}):  # each header read once: damage shows now
            self._open(shard)

    @property
    def spans(self) -> list[tuple[int, int]]:
        """``(tokens, prompt tokens)`` of every example, in index order."""
        return [(r["length"], r.get("prompt_length", 0)) for r in self.records]

    def __len__(self) -> int:
        return len(self.records)

    @property
    def lengths(self) -> list[int]:
        """Tokens of every example, in index order."""
        return [r["length"] for r in self.records]

    @property
    def fingerprint(self) -> str:
        """A hash of what every example is (source, crop, degradation, texts, length; not where or when it
        was written): a resume compares it with the checkpoint's to know the data is the same."""
        content = [{k: v for k, v in r.items() if k not in ("shard", "row", "written")} for r in self.records]
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]

    def _open(self, shard: str):
        if shard not in self._handles:
            path = self.folder / "shards" / shard
            if not path.is_file():
                raise DataError(
                    f"{path} is listed in {self.folder / 'index.jsonl'} but missing: "
                    "rerun scripts/prepare_data.py on this folder"
                )
            try:
                self._handles[shard] = safe_open(str(path), framework="pt")
            except Exception as err:  # safetensors raises its own error types for damaged files
                raise DataError(
                    f"{path} is damaged ({err}): delete it and rerun scripts/prepare_data.py on this folder"
                ) from err
        return self._handles[shard]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        record = self.records[i]
        shard = self._open(record["shard"])
        start, end = shard.get_slice("offsets")[record["row"] : record["row"] + 2].tolist()
        return {
            "ids": shard.get_slice("ids")[start:end].long(),
            "labels": shard.get_slice("labels")[start:end].long(),
        }

    def __getstate__(self) -> dict:  # handles are not picklable; workers reopen them
        return {**self.__dict__, "_handles": {}}


def collate(
    examples: Sequence[dict[str, torch.Tensor]], pad_id: int = 0, max_len: int | None = None
) -> dict[str, torch.Tensor]:
    """Truncate to ``max_len`` and right-pad a batch (the reference pads with 0 / -100).

    Returns ``ids`` [B, T] (``pad_id``), ``labels`` [B, T] (-100), ``attention_mask`` [B, T] and
    ``tokens`` (the number of real tokens, for throughput).
    """
    pairs = [(e["ids"][:max_len], e["labels"][:max_len]) for e in examples]
    length = max(len(i) for i, _ in pairs)
    ids = torch.full((len(pairs), length), pad_id, dtype=torch.long)
    labels = torch.full((len(pairs), length), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(pairs), length), dtype=torch.long)
    for row, (i, lab) in enumerate(pairs):
        ids[row, : len(i)], labels[row, : len(lab)], mask[row, : len(i)] = i, lab, 1
    return {"ids": ids, "labels": labels, "attention_mask": mask, "tokens": mask.sum()}
