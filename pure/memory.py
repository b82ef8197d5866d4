"""How many tiles fit on the device at once (``restore.batch_size: auto``), and going on when they do not.

- :func:`tile_cache_bytes`: the KV cache one tile's generation allocates (:class:`pure.kv_cache.GuidedKVCache`
  sized by :func:`pure.generate.cache_lengths`, as :func:`pure.generate.generate` sizes it), plus
  :func:`prefill_bytes`, an estimate of the activations its prefill holds at once;
- :func:`tiles_that_fit` and :func:`auto_batch_size`: the most tiles whose caches and prefill fit in the
  free device memory, after the weights (when they are not loaded yet) and a margin;
- :func:`fit_batches`: runs a batch function over consecutive groups of items; when a group runs out of
  device memory (:func:`is_out_of_memory`) the batch size is halved, the same group is retried and the
  run goes on;
  :class:`BatchLog` records the sizes used and every halving for the sidecar.

:func:`weight_bytes` and :func:`stored_bytes` give a backbone's weight memory per ``backbone.quantize``
mode, computed from its config and measured on a loaded model. Everything here is arithmetic on sizes
except :func:`free_bytes`, which asks the device.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import torch
from torch import nn

from pure.config import SamplingConfig
from pure.errors import PureError
from pure.generate import cache_lengths
from pure.kv_cache import GuidedKVCache
from pure.quantize import group_size
from pure.sequence import block_length
from pure.vocab import CODES_PER_GRID, GRID_PX

T = TypeVar("T")
R = TypeVar("R")

MARGIN = 0.10
"""Fraction of the free memory :func:`auto_batch_size` leaves unused (allocator fragmentation, kernel
workspaces, the CUDA graph's pool); at least :data:`MIN_MARGIN_BYTES`. A rule of thumb, not measured."""
MIN_MARGIN_BYTES = 2**30
"""The smallest margin, bytes (1 GiB)."""


class TileOutOfMemoryError(PureError):
    """Even one tile does not fit in the device's memory."""


def tile_cache_bytes(
    config,
    dtype: torch.dtype,
    prompt_len: int,
    sampling: SamplingConfig,
    tile: int,
    max_text_tokens: int,
    kv_cache: str = "model",
    draft_len: int = 0,
) -> int:
    """Bytes of the KV cache of ONE tile restored as :meth:`pure.pipeline.Restorer.restore` does (the image
    forced to ``tile`` px, stopping after it): ``prompt_len`` prompt tokens, then at most
    ``max_text_tokens`` of text and the image block, capped by ``sampling.max_new_tokens``; unconditional
    rows (guidance on: ``sampling.cfg_scale != 1``) hold only the image. ``kv_cache``: ``restore.kv_cache``
    (``int8``: codes and scales, plus the dequantised copy of one layer that attention reads,
    :attr:`pure.kv_cache.GuidedKVCache.workspace_nbytes`); ``draft_len``: ``restore.draft_len`` when
    ``restore.speculative`` drafts (0: it does not), whose window of ``draft_len + 1`` columns both caches
    hold besides (:func:`pure.speculative.generate_speculative`). ``config``: the backbone's
    ``ChameleonConfig``; the cache is laid out on the meta device, so nothing is allocated."""
    grids = (tile // GRID_PX, tile // GRID_PX)
    codes = grids[0] * CODES_PER_GRID
    steps = min(sampling.max_new_tokens, max_text_tokens + block_length(codes, codes))
    cond, uncond = cache_lengths(prompt_len, steps, 0, grids)
    guided = sampling.cfg_scale != 1.0
    extra = draft_len + 1 if draft_len else 0
    uncond = uncond + extra if guided else 0
    cache = GuidedKVCache(config, 1, cond + extra, uncond, dtype, "meta", kv_cache == "int8")
    return cache.nbytes + cache.workspace_nbytes


def prefill_bytes(config, prompt_len: int, dtype: torch.dtype) -> int:
    """An estimate of the activations one tile's prefill holds at once, bytes: per prompt token the hidden
    state, its normed copy, queries and attention output (4 x hidden) and the MLP's gate, up and product
    (3 x intermediate), in ``dtype``. From the tensor shapes of one decoder layer, not measured."""
    per_token = 4 * config.hidden_size + 3 * config.intermediate_size
    return prompt_len * per_token * torch.empty(0, dtype=dtype).element_size()


def tiles_that_fit(free: int, per_tile: int, weights: int = 0, margin: float = MARGIN) -> int:
    """Tiles that fit by the rule ``weights + b * per_tile <= free - max(margin * free, 1 GiB)`` (may be 0).

    ``free``: free device memory, bytes (:func:`free_bytes`); ``per_tile``: bytes each tile adds
    (:func:`tile_cache_bytes` + :func:`prefill_bytes`); ``weights``: bytes still to be placed on the
    device (0 once the model is loaded: its weights are no longer free).
    """
    usable = free - max(int(margin * free), MIN_MARGIN_BYTES) - weights
    return max(0, usable // max(per_tile, 1))


def auto_batch_size(
    free: int, per_tile: int, weights: int = 0, margin: float = MARGIN, limit: int | None = None
) -> int:
    """``restore.batch_size: auto``: :func:`tiles_that_fit`, at most ``limit`` (e.g. the image's tile count)
    and at least 1 (when not even one fits by the rule the run tries one, and :func:`fit_batches` reports
    an out-of-memory)."""
    batch = max(1, tiles_that_fit(free, per_tile, weights, margin))
    return int(min(batch, limit) if limit is not None else batch)


def free_bytes(device: torch.device | str) -> int:
    """Memory the next allocations on ``device`` can use, bytes: on CUDA the driver's free memory plus what
    PyTorch's allocator holds unused; on the CPU the system's free physical pages (``os.sysconf``)."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


@dataclass
class BatchLog:
    """What :func:`fit_batches` did, for the sidecar."""

    requested: int | str
    """``restore.batch_size`` as set: an integer or ``auto``."""
    chosen: int
    """The batch size the run started with (``auto`` resolved)."""
    sizes: list[int] = field(default_factory=list)
    """The size of every batch that ran, in order (the last group may be smaller)."""
    halvings: list[str] = field(default_factory=list)
    """One line per out-of-memory: which items, the size that failed and the size tried next."""

    def as_dict(self) -> dict:
        """The sidecar's record: requested, chosen, the largest size that ran, the halvings."""
        return {
            "requested": self.requested,
            "chosen": self.chosen,
            "used": max(self.sizes, default=self.chosen),
            "out_of_memory": self.halvings,
        }


def release_memory() -> None:
    """Free what an out-of-memory left behind: unreachable tensors, then PyTorch's cached CUDA blocks."""
    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def is_out_of_memory(err: BaseException) -> bool:
    """True for ``torch.OutOfMemoryError`` and for the plain ``RuntimeError`` ("CUDA error: out of memory")
    that an allocation inside CUDA-graph capture, graph instantiation or a cuBLAS workspace raises instead."""
    if isinstance(err, torch.OutOfMemoryError):
        return True
    return isinstance(err, RuntimeError) and "out of memory" in str(err).lower()


def fit_batches(
    items: Sequence[T], log: BatchLog, run: Callable[[int, list[T]], R]
) -> Iterator[tuple[int, list[T], R]]:
    """Yield ``(first, group, run(first, group))`` for consecutive groups of ``items``, ``log.chosen`` at a
    time; ``first`` is the group's index in ``items``.

    When ``run`` runs out of device memory (:func:`is_out_of_memory`) the memory is released, the batch
    size halved (a line in ``log.halvings``) and the same group retried; later groups keep the smaller
    size. ``run`` must have no side effects a retry would repeat (generate there; decode and blend what is
    yielded). Other errors pass through. Raises
    :class:`TileOutOfMemoryError` when one item alone does not fit.
    """
    size, first = log.chosen, 0
    while first < len(items):
        group = list(items[first : first + size])
        try:
            result, fits = run(first, group), True
        except RuntimeError as err:  # torch.OutOfMemoryError is one
            if not is_out_of_memory(err):
                raise
            if len(group) == 1:
                raise TileOutOfMemoryError(
                    f"out of device memory with a single tile (item {first}): use backbone.quantize=int8 or "
                    "int4 (--quantize), restore.kv_cache=int8 (--kv-cache), a smaller restore.tile, or a "
                    "device with more memory"
                ) from err
            fits = False
        if not fits:
            release_memory()  # outside the except block: the traceback no longer holds the batch's tensors
            size = max(1, len(group) // 2)
            log.halvings.append(
                f"items {first}-{first + len(group) - 1}: out of memory at batch {len(group)}, "
                f"halved to {size}"
            )
            continue
        log.sizes.append(len(group))
        yield first, group, result
        first += len(group)


def _linear_bytes(out_features: int, in_features: int, mode: str, element_size: int, device_type: str) -> int:
    """Stored bytes of one ``[out, in]`` weight in ``mode``, in the layouts of :mod:`pure.quantize`'s torchao
    tensors: int8 codes, an fp32 scale and an int8 zero point per row; int4 codes packed two per byte, a
    scale and a zero point per group, padded on CUDA to in % 1024 == 0 and out % 8 == 0."""
    if mode == "none":
        return out_features * in_features * element_size
    if mode == "int8":
        return out_features * in_features + 5 * out_features
    group = group_size(in_features)
    if device_type == "cuda":
        in_features, out_features = -(-in_features // 1024) * 1024, -(-out_features // 8) * 8
    return out_features * in_features // 2 + 2 * (in_features // group) * out_features * element_size


def weight_bytes(config, mode: str, dtype: torch.dtype, device_type: str = "cuda") -> int:
    """Bytes of a backbone's weights in ``dtype`` with ``backbone.quantize=mode``, computed from its
    ``ChameleonConfig`` (untied embedding and head, qk-norm over heads, no biases): what
    :func:`stored_bytes` measures on the loaded model (tested on the CPU layout)."""
    element = torch.empty(0, dtype=dtype).element_size()
    hidden, inter, vocab = config.hidden_size, config.intermediate_size, config.vocab_size
    head_dim = hidden // config.num_attention_heads
    linears = [(hidden, hidden)] * 4 + [(inter, hidden), (inter, hidden), (hidden, inter)]
    per_layer = sum(_linear_bytes(o, i, mode, element, device_type) for o, i in linears)
    norms = (2 * hidden + 4 * config.num_attention_heads * head_dim) * element
    return config.num_hidden_layers * (per_layer + norms) + (2 * vocab * hidden + hidden) * element


def stored_bytes(module: nn.Module) -> int:
    """Bytes a module's parameters occupy as stored: a torchao tensor counts its packed data and scales,
    not the full-precision size it stands for."""

    def size(t: torch.Tensor) -> int:
        if hasattr(t, "__tensor_flatten__"):
            names, _ = t.__tensor_flatten__()
            return sum(size(getattr(t, name)) for name in names)
        return t.numel() * t.element_size()

    return sum(size(p) for p in module.parameters())
