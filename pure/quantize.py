"""Weight-only quantisation of the backbone's decoder linear layers (``backbone.quantize``), with torchao.

What is quantised: the seven projections of every decoder layer (``q/k/v/o_proj``, ``gate/up/down_proj``),
6.48 of the 7B's 7.08 billion parameters. The token embedding, the output head (``lm_head``) and the
norms stay in the model's dtype (issue 14: left out unless measured harmless; they are 1.2 GB in bf16).
Activations, the KV cache and the logits keep the model's dtype: only the stored weights shrink.

Modes (torchao 0.18):

- ``int8``: one signed 8-bit integer per weight and one fp32 scale per output row, symmetric
  (``Int8WeightOnlyConfig``, an ``Int8Tensor``), on any device and float dtype. Its linear computes
  ``(x @ w_int8.to(x.dtype).T) * scale``: without ``torch.compile``, which the decode loop does not
  use, the cast is a separate kernel that writes a full-precision copy of each weight at every call, so
  int8 saves memory but is not expected to be faster than bf16 (measured by ``benchmarks/gpu_check.sh``).
- ``int4``: groups of :func:`group_size` inputs, each with a scale and a zero point, 4-bit codes 0..15
  (the "tinygemm" scheme, ``_choose_qparams_affine_tinygemm``), multiplied by a fused kernel that reads
  the packed codes: on CUDA ``Int4WeightOnlyConfig(int4_packing_format="tile_packed_to_4d")`` and
  ``aten._weight_int4pack_mm`` (bfloat16 only, compute capability >= 8.0); on the CPU the prototype
  ``PrototypeInt4WeightOnlyConfig`` and ``aten._weight_int4pack_mm_for_cpu`` (float32 or bfloat16), the
  same quantisation rule, so the CPU quality guard measures the rounding the GPU uses.

Loading stays layer by layer (:func:`pure.model.load_backbone`): each weight is read from its
safetensors shard straight onto the model's device and, if it is one of the projections, quantised
there at once by :func:`quantize_linear_`, which replaces it; the full-precision copy is freed before
the next tensor is read. Neither the host nor the device ever holds more than one full-precision
projection (at most 4096 x 11008 in the 7B, 90 MB in bf16) on top of what is already quantised.

CUDA graphs: the quantised weights are torchao tensor subclasses, which torchao builds to compose with
``torch.compile`` and CUDA graphs (https://docs.pytorch.org/ao/stable/subclass_basic.html; gpt-fast
decodes ``_weight_int4pack_mm`` weights under ``torch.compile(mode="reduce-overhead")``, i.e. in CUDA
graphs). Their Python dispatch runs while a step is captured and records plain aten kernels (a cast,
``mm`` and ``mul`` for int8; ``pad``, ``_weight_int4pack_mm`` and a slice for int4), none of which reads
a value back to the host. ``tests/test_quantize.py`` traces a quantised decoding step with
``torch.compile(fullgraph=True)`` (which fails on any host synchronisation); capture itself is checked
on a GPU by ``benchmarks/bench_7b.py``.
"""

from __future__ import annotations

import logging
import re
from contextlib import contextmanager

import torch
from torch import nn

from pure.errors import PureError

QUANTIZE_MODES = ("none", "int8", "int4")
"""The values of ``backbone.quantize``."""
QUANTIZED_WEIGHT = re.compile(r"model\.layers\.\d+\.(self_attn|mlp)\.(q|k|v|o|gate|up|down)_proj\.weight")
"""Checkpoint names of the weights that are quantised: the decoder layers' seven projections."""
INT4_GROUP_SIZES = (128, 64, 32)
"""int4 group sizes, preferred first: the largest that divides a layer's input size is used (128 for
every layer of the 7B; 64 for most layers of the tiny test models, whose hidden size is 64)."""
FIX = "use backbone.quantize=int8 (--quantize int8) or none"


class QuantizeError(PureError):
    """``backbone.quantize`` cannot run with this device, dtype or model."""


def check_quantize(mode: str, device: torch.device | str, dtype: torch.dtype) -> None:
    """Raise :class:`QuantizeError` (one line: which mode, which device, why, what instead) when ``mode``
    cannot run on ``device`` with weights of ``dtype``; call before loading anything."""
    device = torch.device(device)
    if mode not in QUANTIZE_MODES:
        raise QuantizeError(f"backbone.quantize={mode!r}: expected one of {', '.join(QUANTIZE_MODES)}")
    if mode == "none":
        return
    where = f"backbone.quantize={mode} on {device}"
    if device.type not in ("cpu", "cuda"):
        raise QuantizeError(f"{where}: torchao's weight-only kernels run on cpu and cuda only; use none")
    if mode != "int4":
        return
    if device.type == "cuda":
        if dtype != torch.bfloat16:
            raise QuantizeError(
                f"{where} with dtype {str(dtype).removeprefix('torch.')}: the CUDA int4 kernel "
                f"(tinygemm) takes bfloat16 only; use --dtype bfloat16, or {FIX}"
            )
        major, minor = torch.cuda.get_device_capability(device)
        if major < 8:
            raise QuantizeError(
                f"{where}: the CUDA int4 kernel (tinygemm) needs compute capability 8.0 or newer "
                f"(Ampere), this GPU has {major}.{minor}; {FIX}"
            )
    elif dtype not in (torch.float32, torch.bfloat16):
        raise QuantizeError(f"{where}: the CPU int4 kernel takes float32 or bfloat16 weights; {FIX}")


def check_adapter(mode: str, adapter: str) -> None:
    """Refuse a LoRA adapter with quantisation: merging needs full-precision weights, and merging into
    quantised ones would round twice. Raises :class:`QuantizeError` naming the fix."""
    if adapter and mode != "none":
        raise QuantizeError(
            f"backbone.adapter={adapter} with backbone.quantize={mode}: merge the adapter first "
            f"(python scripts/merge_lora.py {adapter} MERGED), then restore with --model MERGED "
            f"--quantize {mode}"
        )


def group_size(in_features: int) -> int:
    """The int4 group size of a layer with ``in_features`` inputs (:data:`INT4_GROUP_SIZES`).

    Raises :class:`QuantizeError` when none divides it."""
    for size in INT4_GROUP_SIZES:
        if in_features % size == 0:
            return size
    raise QuantizeError(
        f"backbone.quantize=int4: a layer has {in_features} inputs, not a multiple of "
        f"{INT4_GROUP_SIZES[-1]} (the smallest int4 group); {FIX}"
    )


@contextmanager
def _quiet_torchao():
    """Import torchao without torch's notice that it registers an Enum as a pytree constant (nothing the
    user can act on)."""
    logger = logging.getLogger("torch.utils._pytree")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _config(mode: str, linear: nn.Linear):
    """The torchao config that quantises ``linear`` (already on its device) in ``mode``."""
    with _quiet_torchao():
        from torchao.quantization import Int4WeightOnlyConfig, Int8WeightOnlyConfig

        if mode == "int8":
            return Int8WeightOnlyConfig(set_inductor_config=False)
        group = group_size(linear.in_features)
        if linear.weight.device.type == "cuda":
            return Int4WeightOnlyConfig(
                group_size=group, int4_packing_format="tile_packed_to_4d", set_inductor_config=False
            )
        from torchao.prototype.quantization.int4.inference_workflow import PrototypeInt4WeightOnlyConfig

        return PrototypeInt4WeightOnlyConfig(group_size=group, set_inductor_config=False)


def quantize_linear_(linear: nn.Linear, mode: str) -> None:
    """Replace ``linear.weight`` (``[out, in]``, on its final device and dtype) by its ``mode`` quantisation,
    in place; ``none`` leaves it. The full-precision weight is released when no one else holds it."""
    if mode == "none":
        return
    with _quiet_torchao():
        from torchao.quantization import quantize_

        quantize_(linear, _config(mode, linear))


def load_quantized_(model: nn.Module, name: str, weight: torch.Tensor, mode: str) -> None:
    """Put the checkpoint tensor ``weight`` (full precision, on its final device) into ``model`` as its
    parameter ``name`` (one of :data:`QUANTIZED_WEIGHT`) and quantise that layer at once (the loading
    path of :func:`pure.model.load_backbone`: one full-precision projection at a time)."""
    model.load_state_dict({name: weight}, strict=False, assign=True)
    quantize_linear_(model.get_submodule(name.removesuffix(".weight")), mode)


def quantize_decoder_(model: nn.Module, mode: str) -> int:
    """Quantise every decoder projection (:data:`QUANTIZED_WEIGHT`) of an already loaded ``model`` in
    place (for models not built by :func:`pure.model.load_backbone`, e.g. the benchmarks' random 7B);
    returns how many layers were quantised."""
    layers = [
        module
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and QUANTIZED_WEIGHT.fullmatch(name + ".weight")
    ]
    for module in layers:
        quantize_linear_(module, mode)
    return len(layers) if mode != "none" else 0
