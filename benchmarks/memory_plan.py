"""Computed (not measured) memory of restoring 512 px tiles with the 7B, per ``backbone.quantize`` and
``restore.kv_cache`` mode and card size: the weights (:func:`pure.memory.weight_bytes`, CUDA layouts,
bf16), one tile's KV cache (:func:`pure.memory.tile_cache_bytes`, guidance on, the default sampler and
``restore.max_text_tokens``; with an int8 cache also the dequantised copy of one layer attention reads),
an estimate of one tile's prefill activations (:func:`pure.memory.prefill_bytes`), and the batch
``restore.batch_size: auto`` would choose on a card whose whole memory is free
(:func:`pure.memory.tiles_that_fit`; "no": not even one tile within the margin). The prompt is tokenised
with the tiny byte-level tokenizer (no merges), which gives at least as many tokens as PURE's: the
numbers err on the large side.

    python benchmarks/memory_plan.py
"""

from __future__ import annotations

import argparse

import torch
from transformers import ChameleonConfig

from pure.config import RestoreConfig, SamplingConfig
from pure.memory import prefill_bytes, tile_cache_bytes, tiles_that_fit, weight_bytes
from pure.sequence import conversation
from pure.tiny import synthetic_vocabulary, tiny_backbone_config, tiny_tokenizer
from pure.vocab import CODE_PX, Vocab

GiB = 2**30


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cards", type=int, nargs="+", default=[12, 16, 24, 48, 80], help="card sizes, GiB")
    args = parser.parse_args()
    config = ChameleonConfig(**tiny_backbone_config(4096, 11008, 32, 32))
    restore, sampling, dtype = RestoreConfig(), SamplingConfig(), torch.bfloat16
    side = restore.tile // CODE_PX
    vocab = Vocab.from_names(synthetic_vocabulary(), bos=0)
    prompt_len = len(conversation(tiny_tokenizer(), vocab, torch.zeros(side, side, dtype=torch.long))[0])
    caches = {
        kv: tile_cache_bytes(config, dtype, prompt_len, sampling, restore.tile, restore.max_text_tokens, kv)
        for kv in ("model", "int8")
    }
    prefill = prefill_bytes(config, prompt_len, dtype)
    print(
        f"{restore.tile} px tile, {prompt_len}-token prompt: KV cache {caches['model'] / GiB:.2f} GiB "
        f"(int8 cache: {caches['int8'] / GiB:.2f} GiB with its workspace), "
        f"prefill activations ~{prefill / GiB:.2f} GiB (estimate)"
    )
    print(
        "| weights | KV cache | weights GiB | batch 1 GiB | "
        + " | ".join(f"{c} GiB card" for c in args.cards)
        + " |"
    )
    print("|---|---|---|---|" + "---|" * len(args.cards))
    for kv, cache in caches.items():
        for mode in ("none", "int8", "int4"):
            weights = weight_bytes(config, mode, dtype)
            batch_1 = weights + cache + prefill
            cells = [str(tiles_that_fit(card * GiB, cache + prefill, weights) or "no") for card in args.cards]
            name, kv_name = "bf16" if mode == "none" else mode, "model (bf16)" if kv == "model" else kv
            print(
                f"| {name} | {kv_name} | {weights / GiB:.2f} | {batch_1 / GiB:.2f} | "
                + " | ".join(cells)
                + " |"
            )


if __name__ == "__main__":
    main()
