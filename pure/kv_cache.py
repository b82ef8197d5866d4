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

    ``batch``: B conditional rows (and B unconditional ones when ``uncond_len > 0``).
    Memory: ``2 * layers * B * heads * head_dim * (cond_len + uncond_len)`` elements of ``dtype``.
    """

    def __init__(self, config, batch: int, cond_len: int, uncond_len: int, dtype, device):
        heads = config.num_key_value_heads
        head_dim = config.hidden_size // config.num_attention_heads
        layers = config.num_hidden_layers
        shape = (layers, batch, heads)
        self.cond_k = torch.zeros(*shape, cond_len, head_dim, dtype=dtype, device=device)
        self.cond_v = torch.zeros_like(self.cond_k)
        self.uncond_k = torch.zeros(*shape, uncond_len, head_dim, dtype=dtype, device=device)
        self.uncond_v = torch.zeros_like(self.uncond_k)
        self.plan = KVWrite(0)

    @property
    def nbytes(self) -> int:
        """Bytes held by the cache."""
        return sum(
            t.numel() * t.element_size() for t in (self.cond_k, self.cond_v, self.uncond_k, self.uncond_v)
        )

    def update(self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, *args, **kwargs):
        """Write the new ``key``/``value`` ``[R, heads, q, head_dim]`` where ``self.plan`` says."""
        plan, c = self.plan, self.plan.cond_rows
        if c and plan.cond_cols.ndim == 1:
            self.cond_k[layer_idx].index_copy_(2, plan.cond_cols, key[:c])
            self.cond_v[layer_idx].index_copy_(2, plan.cond_cols, value[:c])
        elif c:  # each row at its own columns
            rows = torch.arange(c, device=key.device)[:, None]
            self.cond_k[layer_idx][rows, :, plan.cond_cols] = key[:c].transpose(1, 2)
            self.cond_v[layer_idx][rows, :, plan.cond_cols] = value[:c].transpose(1, 2)
        if plan.uncond_cols is not None:
            rows = torch.arange(key.shape[0] - c, device=key.device)[:, None]
            self.uncond_k[layer_idx][rows, :, plan.uncond_cols] = key[c:].transpose(1, 2)
            self.uncond_v[layer_idx][rows, :, plan.uncond_cols] = value[c:].transpose(1, 2)
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
        k, v = cache.cond_k[layer][:, :, : plan.cond_limit], cache.cond_v[layer][:, :, : plan.cond_limit]
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
    if plan.uncond_cols is not None:
        k, v = (
            cache.uncond_k[layer][:, :, : plan.uncond_limit],
            cache.uncond_v[layer][:, :, : plan.uncond_limit],
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
