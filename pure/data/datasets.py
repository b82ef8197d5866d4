"""Datasets: pre-tokenised shards for training, paired LR/HR folders for evaluation.

Training reads what :mod:`pure.data.prepare` wrote: :class:`ShardDataset` gives one example's
``ids`` and ``labels``, :class:`LengthGroupedBatchSampler` puts examples of similar length together
(PURE's sequences are ~8,400 tokens for 512 px pairs, but descriptions vary, and mixed image sizes
vary more), and :func:`collate` pads a batch.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from safetensors import safe_open

from pure.metrics import load_image, pair_images
from pure.sequence import IGNORE_INDEX


class ShardDataset(torch.utils.data.Dataset):
    """The examples listed in ``<folder>/index.jsonl``; item i is ``{"ids": [T] int64, "labels": [T] int64}``.

    Shards are opened lazily, once per process (so DataLoader workers each keep their own handles),
    and only the example's slice is read.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        index = self.folder / "index.jsonl"
        if not index.is_file():
            raise FileNotFoundError(
                f"{index} not found: run scripts/prepare_data.py with out_dir={self.folder}"
            )
        self.records = [
            json.loads(line) for line in index.read_text(encoding="utf-8").splitlines() if line.strip()
        ]
        self._handles: dict[str, object] = {}

    def __len__(self) -> int:
        return len(self.records)

    @property
    def lengths(self) -> list[int]:
        """Tokens of every example, in index order."""
        return [r["length"] for r in self.records]

    def _open(self, shard: str):
        if shard not in self._handles:
            path = self.folder / "shards" / shard
            if not path.is_file():
                raise FileNotFoundError(
                    f"{path} is listed in {self.folder / 'index.jsonl'} but missing: "
                    "rerun scripts/prepare_data.py on this folder"
                )
            self._handles[shard] = safe_open(str(path), framework="pt")
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


class LengthGroupedBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Batches of indices with similar lengths, in random order.

    Each epoch shuffles all indices (seed + epoch), cuts them into groups of ``batch_size * group``,
    sorts every group by length and cuts it into batches, then shuffles the batches. Padding then
    stays small while the order stays random. Call :meth:`set_epoch` before each epoch.
    """

    def __init__(
        self, lengths: Sequence[int], batch_size: int, seed: int = 0, group: int = 50, drop_last: bool = False
    ) -> None:
        if batch_size < 1 or group < 1:
            raise ValueError(f"batch_size ({batch_size}) and group ({group}) must be >= 1")
        self.lengths, self.batch_size, self.seed, self.group = list(lengths), batch_size, seed, group
        self.drop_last, self.epoch = drop_last, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self) -> list[list[int]]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.lengths), generator=g).tolist()
        span = self.batch_size * self.group
        batches = []
        for start in range(0, len(order), span):
            chunk = sorted(order[start : start + span], key=lambda i: -self.lengths[i])
            batches += [chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        if self.drop_last:
            batches = [b for b in batches if len(b) == self.batch_size]
        return [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._batches())

    def __len__(self) -> int:
        return (
            len(self.lengths) // self.batch_size
            if self.drop_last
            else -(-len(self.lengths) // self.batch_size)
        )


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


class PairedFolderDataset(torch.utils.data.Dataset):
    """LR and HR images matched by file name (extensions may differ), for evaluation.

    Item i is ``{"name": stem, "lq": [3, h, w], "hq": [3, H, W]}``, float32 in [0, 1]. Any HR image
    without an LR partner, or the reverse, is an error naming it.
    """

    def __init__(self, lr_dir: str | Path, hr_dir: str | Path) -> None:
        pairing = pair_images(Path(lr_dir), Path(hr_dir))
        if pairing.missing or pairing.extra:
            raise ValueError(
                f"{lr_dir} and {hr_dir} do not pair up by name: HR without LR "
                f"{pairing.missing[:5]}, LR without HR {pairing.extra[:5]}; remove or rename them"
            )
        self.pairs = [(lr, hr) for lr, hr in pairing.pairs if hr is not None]

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> dict:
        lr, hr = self.pairs[i]
        return {"name": hr.stem, "lq": load_image(lr), "hq": load_image(hr)}
