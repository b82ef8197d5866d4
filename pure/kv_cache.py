"""A static KV cache for guided decoding, and the attention that reads it.

Guidance runs ``B`` conditional rows and ``B`` unconditional rows through ONE batched forward per
step (the linear layers see ``2B`` rows), but the two halves remember different things: a conditional
row holds its prompt and answer, an unconditional row only the image it is drawing (SPEC section 5).
So the cache has two parts, each allocated once per batch and written in place, never concatenated:

- ``cond``: ``[layers, B, heads, cond_len, head_dim]``; every conditional row writes the same column
  per step (prompts are left-padded to one length);
- ``uncond``: ``[layers, B, heads, uncond_len, head_dim]``; a row writes at its own column, equal to
  its position id (tokens since its image's start), so an image that closes and a new one that opens
  simply overwrite the old columns.

Before each forward the decode loop describes the new tokens in a :class:`KVWrite` (which columns
they fill, what each query may see) and sets it as the cache's ``plan``. transformers' attention
layers call the cache's ``update`` (which writes) and then :func:`guided_attention`, which the
model's config names while :func:`use_guided_attention` is active and which attends each half over
its own cache (transformers' attention-function interface; no model code is copied).

``restore.kv_cache: int8`` stores every key and value vector as int8 codes with one scale per token and
head (symmetric absmax: ``x ~ codes * amax(|x|) / 127``), about half the memory of bfloat16. A vector is
quantised when it is written and never again, on its own: its codes depend only on its values, not on
which tokens were written in the same forward.
Attention dequantises the columns it reads into the model's dtype. Not exact: the quality guard
(:mod:`pure.quantize_quality`) measures how far it moves the sampler.
"""

from __future__ import annotations

import inspect
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.models.chameleon.modeling_chameleon import ChameleonModel

CACHE_ARG = "cache" if "cache" in inspect.signature(ChameleonModel.forward).parameters else "past_key_values"
"""transformers 5.2x renamed ``past_key_values`` to ``cache``; we accept and pass on either."""
ATTENTION = "pure_guided_kv"
"""Name under which :func:`guided_attention` is registered with transformers."""
KV_CACHE_MODES = ("model", "int8")
"""``restore.kv_cache``: keys and values stored in the model's dtype, or as int8 codes and scales."""
INT8_MAX = 127
"""Largest int8 code: codes lie in [-127, 127], symmetric around 0."""


def scale_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype int8 scales are stored in for a model in ``dtype``: its own, except float32 for float16,
    whose normal range ends at 6.1e-5 (the scale of a vector with entries below about 8e-3 would lose
    precision, below about 8e-6 it would vanish)."""
    return torch.float32 if dtype == torch.float16 else dtype


def quantize_int8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric absmax int8 quantisation of the last dimension: ``x`` ``[..., D]`` -> codes ``[..., D]``
    int8 in [-127, 127] and scales ``[..., 1]`` in :func:`scale_dtype` of ``x``'s dtype, with
    ``x ~ codes * scales``. The scale is rounded to its dtype before the codes are chosen, so each element
    is within half a stored scale of ``codes * scales`` (up to float32 rounding). All-zero vectors get
    scale 0 and codes 0."""
    scale = (x.detach().abs().amax(-1, keepdim=True).float() / INT8_MAX).to(scale_dtype(x.dtype))
    codes = torch.round(x.float() / scale.float().clamp(min=torch.finfo(torch.float32).tiny))
    return codes.clamp(-INT8_MAX, INT8_MAX).to(torch.int8), scale


@dataclass
class KVWrite:
    """The new tokens of one forward over ``R = cond_rows + uncond rows`` rows of ``q`` tokens each.

    ``cond_cols``: ``[q]`` cache columns of the conditional rows' tokens (shared by all of them), or
    ``[cond_rows, q]``, each row's own (speculative decoding, where rows advance by different amounts).
    ``cond_mask``: ``[cond_rows, 1, q, cond_limit]`` bool, True where a query may attend; None for a
    plain causal prefill (``q == cond_limit``), which lets SDPA skip the masked half.
    ``uncond_cols``: ``[R - cond_rows, q]`` columns of the unconditional rows' tokens, per row.
    ``uncond_mask``: ``[R - cond_rows, 1, q, uncond_limit]`` bool; None for a plain causal prefill.
    ``cond_limit``/``uncond_limit``: how many leading columns attention reads (the full length when
    the step is captured as a graph; only the written ones in eager mode).
    """

    cond_rows: int
    cond_cols: torch.Tensor | None = None
    cond_mask: torch.Tensor | None = None
    cond_limit: int = 0
    uncond_cols: torch.Tensor | None = None
    uncond_mask: torch.Tensor | None = None
    uncond_limit: int = 0


class GuidedKVCache:
    """The two-part static cache described in the module docstring.

    ``batch``: B conditional rows (and B unconditional ones when ``uncond_len > 0``). ``int8``: store
    int8 codes ``[..., head_dim]`` and a scale ``[..., 1]`` in :func:`scale_dtype` per token and head
    (``restore.kv_cache: int8``) instead of ``dtype`` values. Memory, with ``columns = cond_len +
    uncond_len``: ``2 * layers * B * heads * columns`` times ``head_dim * size(dtype)`` bytes, or
    ``head_dim + size(scale_dtype)`` with ``int8``. The stored tensors ``cond_k`` etc. have the shapes of the
    module docstring either way; :meth:`read` returns their values in ``dtype``.
    """

    PARTS = ("cond_k", "cond_v", "uncond_k", "uncond_v")

    def __init__(self, config, batch: int, cond_len: int, uncond_len: int, dtype, device, int8: bool = False):
        heads = config.num_key_value_heads
        head_dim = config.hidden_size // config.num_attention_heads
        layers = config.num_hidden_layers
        store = torch.int8 if int8 else dtype
        lengths = dict(cond_k=cond_len, cond_v=cond_len, uncond_k=uncond_len, uncond_v=uncond_len)
        for part, length in lengths.items():
            setattr(
                self, part, torch.zeros(layers, batch, heads, length, head_dim, dtype=store, device=device)
            )
        self.scales = (
            {
                part: torch.zeros(layers, batch, heads, n, 1, dtype=scale_dtype(dtype), device=device)
                for part, n in lengths.items()
            }
            if int8
            else None
        )
        self.dtype = dtype
        self.plan = KVWrite(0)

    @property
    def nbytes(self) -> int:
        """Bytes held by the cache (codes and scales with ``int8``)."""
        tensors = [getattr(self, part) for part in self.PARTS] + list((self.scales or {}).values())
        return sum(t.numel() * t.element_size() for t in tensors)

    @property
    def workspace_nbytes(self) -> int:
        """Bytes of the dequantised copies attention holds at once with ``int8``, an upper bound: one layer's
        keys and values of both parts in the cache's dtype (the unconditional ones are read after the
        conditional ones are freed), plus a float32 intermediate where scales are float32 and the dtype is
        not (float16). 0 when values are stored in the dtype: attention reads them in place."""
        if self.scales is None:
            return 0
        size = torch.empty(0, dtype=self.dtype).element_size()
        if scale_dtype(self.dtype) != self.dtype:
            size += 4
        return sum(getattr(self, part)[0].numel() for part in self.PARTS) * size

    def read(self, part: str, layer: int, limit: int) -> torch.Tensor:
        """The first ``limit`` columns of ``part`` (one of :attr:`PARTS`) at ``layer``, ``[rows, heads,
        limit, head_dim]`` in the cache's dtype (dequantised when stored as int8: one new tensor)."""
        stored = getattr(self, part)[layer][:, :, :limit]
        if self.scales is None:
            return stored
        return (stored * self.scales[part][layer][:, :, :limit]).to(self.dtype)

    def _write(self, part: str, layer: int, values: torch.Tensor, cols: torch.Tensor) -> None:
        """Write ``values`` ``[rows, heads, q, head_dim]`` of ``part`` at columns ``cols``: ``[q]`` shared
        by every row, or ``[rows, q]`` each row's own (quantised first with ``int8``)."""
        targets = [(getattr(self, part)[layer], values)]
        if self.scales is not None:
            codes, scales = quantize_int8(values)
            targets = [(targets[0][0], codes), (self.scales[part][layer], scales)]
        for target, new in targets:
            if cols.ndim == 1:
                target.index_copy_(2, cols, new)
            else:  # row r's token i goes to column cols[r, i] (distinct within a row)
                target.scatter_(2, cols[:, None, :, None].expand(new.shape), new)

    def update(self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, *args, **kwargs):
        """Write the new ``key``/``value`` ``[R, heads, q, head_dim]`` where ``self.plan`` says."""
        plan, c = self.plan, self.plan.cond_rows
        if c:
            self._write("cond_k", layer_idx, key[:c], plan.cond_cols)
            self._write("cond_v", layer_idx, value[:c], plan.cond_cols)
        if plan.uncond_cols is not None:
            self._write("uncond_k", layer_idx, key[c:], plan.uncond_cols)
            self._write("uncond_v", layer_idx, value[c:], plan.uncond_cols)
        return key, value


def guided_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, **kwargs):
    """Attention of the conditional rows over the conditional cache and of the unconditional rows over
    theirs. ``query``: ``[R, heads, q, head_dim]``; returns ``[R, q, heads, head_dim]`` as transformers'
    attention functions do. ``key``/``value``/``attention_mask`` are ignored: the cache holds the keys
    (already written by :meth:`GuidedKVCache.update`) and its plan the masks; the model's forward passes
    the cache on as ``kv_cache``. Without one, this is transformers' SDPA attention."""
    cache: GuidedKVCache | None = kwargs.pop("kv_cache", None)
    if cache is None:  # an ordinary forward inside use_guided_attention: plain SDPA
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, **kwargs)
    plan, layer, c = cache.plan, module.layer_idx, cache.plan.cond_rows
    gqa = getattr(module, "num_key_value_groups", 1) > 1
    parts = []
    if c:
        k, v = cache.read("cond_k", layer, plan.cond_limit), cache.read("cond_v", layer, plan.cond_limit)
        parts.append(
            F.scaled_dot_product_attention(
                query[:c],
                k,
                v,
                plan.cond_mask,
                is_causal=plan.cond_mask is None,
                scale=scaling,
                enable_gqa=gqa,
            )
        )
        del k, v  # an int8 cache's dequantised copies, freed before the unconditional ones are made
    if plan.uncond_cols is not None:
        k, v = (
            cache.read("uncond_k", layer, plan.uncond_limit),
            cache.read("uncond_v", layer, plan.uncond_limit),
        )
        parts.append(
            F.scaled_dot_product_attention(
                query[c:],
                k,
                v,
                plan.uncond_mask,
                is_causal=plan.uncond_mask is None,
                scale=scaling,
                enable_gqa=gqa,
            )
        )
    out = parts[0] if len(parts) == 1 else torch.cat(parts)
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register(ATTENTION, guided_attention)


@contextmanager
def use_guided_attention(model):
    """Route ``model``'s attention through :func:`guided_attention` inside the ``with`` block."""
    config = model.config
    previous = config._attn_implementation
    config._attn_implementation = ATTENTION
    try:
        yield
    finally:
        config._attn_implementation = previous
