"""restore.batch_size: auto with a fake memory budget; halving on out-of-memory; weight and cache sizes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import ChameleonConfig

from pure.config import InferConfig, SamplingConfig, load_config
from pure.generate import _start, use_guided_attention
from pure.memory import (
    MIN_MARGIN_BYTES,
    BatchLog,
    TileOutOfMemoryError,
    auto_batch_size,
    fit_batches,
    free_bytes,
    is_out_of_memory,
    prefill_bytes,
    tile_cache_bytes,
    tiles_that_fit,
    weight_bytes,
)
from pure.model import backbone_folder, load_backbone, load_text_side
from pure.sequence import conversation
from pure.tiny import synthetic_vocabulary, tiny_backbone_config, tiny_tokenizer
from pure.vocab import Vocab

ROOT = Path(__file__).resolve().parents[1]
GiB = 2**30
SEVEN_B = ChameleonConfig(**tiny_backbone_config(4096, 11008, 32, 32))


def test_tile_cache_bytes_is_what_generation_allocates():
    """The pipeline's call (a 64 px image forced after at most 5 text tokens, stop after it) allocates
    exactly tile_cache_bytes per tile (with an int8 cache: codes, scales and the dequantising workspace)."""
    folder = str(backbone_folder(load_config(InferConfig, ROOT / "configs" / "tiny.yaml").backbone))
    model = load_backbone(folder, dtype=torch.float32)
    tokenizer, vocab = load_text_side(folder)
    prompt, _ = conversation(tokenizer, vocab, torch.zeros(8, 8, dtype=torch.long))
    guided, plain = SamplingConfig(max_new_tokens=500), SamplingConfig(cfg_scale=1.0, max_new_tokens=60)
    for sampling, kv_cache in [(guided, "model"), (plain, "model"), (guided, "int8"), (plain, "int8")]:
        with torch.inference_mode(), use_guided_attention(model):
            cache, _, _ = _start(
                model, [prompt] * 3, vocab, sampling, None, None, (2, 2), 5, True, kv_cache=kv_cache
            )
        expected = tile_cache_bytes(model.config, torch.float32, len(prompt), sampling, 64, 5, kv_cache)
        assert cache.nbytes + cache.workspace_nbytes == 3 * expected
        assert (cache.workspace_nbytes > 0) == (kv_cache == "int8")
        with torch.inference_mode(), use_guided_attention(model):  # speculative: a window of 31 + 1 columns
            cache, _, _ = _start(
                model, [prompt] * 3, vocab, sampling, None, None, (2, 2), 5, True, 32, kv_cache
            )
        expected = tile_cache_bytes(model.config, torch.float32, len(prompt), sampling, 64, 5, kv_cache, 31)
        assert cache.nbytes + cache.workspace_nbytes == 3 * expected


def test_auto_batch_size_with_a_fake_budget():
    # 20 GiB free, 1 GiB per tile: 10% margin (2 GiB) leaves 18 tiles; the weights still to load take 10
    assert auto_batch_size(20 * GiB, GiB) == 18
    assert auto_batch_size(20 * GiB, GiB, weights=10 * GiB) == 8
    assert auto_batch_size(20 * GiB, GiB, limit=4) == 4
    assert auto_batch_size(5 * GiB, GiB) == 4  # the margin is at least 1 GiB
    assert auto_batch_size(5 * GiB, GiB) == (5 * GiB - MIN_MARGIN_BYTES) // GiB
    assert auto_batch_size(2 * GiB, 4 * GiB) == 1  # not even one by the rule: try one, halving reports it
    assert tiles_that_fit(2 * GiB, 4 * GiB) == 0


def test_the_7b_on_cards_of_24_and_80_gib():
    """Computed, not measured: 512 px tiles of the 7B, bf16 activations and cache, guidance on."""
    vocab = Vocab.from_names(synthetic_vocabulary(), bos=0)
    prompt_len = len(conversation(tiny_tokenizer(), vocab, torch.zeros(64, 64, dtype=torch.long))[0])
    per_tile = tile_cache_bytes(SEVEN_B, torch.bfloat16, prompt_len, SamplingConfig(), 512, 512)
    per_tile += prefill_bytes(SEVEN_B, prompt_len, torch.bfloat16)
    weights = {m: weight_bytes(SEVEN_B, m, torch.bfloat16) for m in ("none", "int8", "int4")}
    assert 14.1e9 < weights["none"] < 14.2e9 and weights["int4"] < weights["int8"] < weights["none"] / 1.8
    assert auto_batch_size(24 * GiB, per_tile, weights=weights["none"]) == 1
    assert auto_batch_size(24 * GiB, per_tile, weights=weights["int4"]) == 2
    assert auto_batch_size(80 * GiB, per_tile, weights=weights["none"]) == 8


def _fake_device(budget: int, calls: list[list[int]]):
    """A batch function that runs out of memory above ``budget`` items, recording every call."""

    def run(first: int, group: list[int]) -> list[int]:
        calls.append(group)
        if len(group) > budget:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 6.40 GiB")
        return [2 * item for item in group]

    return run


def test_out_of_memory_halves_the_batch_and_goes_on():
    calls: list[list[int]] = []
    log = BatchLog(requested="auto", chosen=8)
    done = list(fit_batches(list(range(11)), log, _fake_device(3, calls)))
    assert [first for first, _, _ in done] == [0, 2, 4, 6, 8, 10]
    assert [x for _, _, out in done for x in out] == [2 * i for i in range(11)]  # each item once, in order
    assert calls[:3] == [list(range(8)), list(range(4)), [0, 1]]  # 8 fails, 4 fails, 2 runs
    assert log.sizes == [2, 2, 2, 2, 2, 1]
    assert log.halvings == [
        "items 0-7: out of memory at batch 8, halved to 4",
        "items 0-3: out of memory at batch 4, halved to 2",
    ]
    assert log.as_dict() == {"requested": "auto", "chosen": 8, "used": 2, "out_of_memory": log.halvings}


def test_one_tile_that_does_not_fit_is_one_line():
    log = BatchLog(requested=2, chosen=2)
    with pytest.raises(TileOutOfMemoryError) as err:
        list(fit_batches([0, 1], log, _fake_device(0, [])))
    message = str(err.value)
    assert (
        "\n" not in message
        and "--quantize" in message
        and "--kv-cache" in message
        and "restore.tile" in message
    )
    assert log.halvings == ["items 0-1: out of memory at batch 2, halved to 1"]


def test_out_of_memory_during_graph_capture_also_halves():
    """Inside CUDA-graph capture an allocation failure is a plain RuntimeError, not OutOfMemoryError."""

    def run(first: int, group: list[int]) -> list[int]:
        if len(group) > 1:
            raise RuntimeError("CUDA error: out of memory\nCUDA kernel errors might be reported later")
        return group

    log = BatchLog(requested=2, chosen=2)
    assert [g for _, g, _ in fit_batches([0, 1], log, run)] == [[0], [1]]
    assert log.halvings == ["items 0-1: out of memory at batch 2, halved to 1"]
    assert is_out_of_memory(torch.OutOfMemoryError("x"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))

    def broken(first: int, group: list[int]) -> list[int]:
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    with pytest.raises(RuntimeError, match="shapes"):  # any other error is not taken for a full device
        list(fit_batches([0, 1], BatchLog(requested=2, chosen=2), broken))


def test_no_out_of_memory_keeps_the_chosen_size():
    log = BatchLog(requested=4, chosen=4)
    assert [len(g) for _, g, _ in fit_batches(list(range(9)), log, _fake_device(4, []))] == [4, 4, 1]
    assert log.halvings == [] and log.as_dict()["used"] == 4


def test_free_bytes_on_the_cpu():
    assert free_bytes("cpu") > 0


def test_the_7b_with_an_int8_cache_within_the_issue_targets():
    """Computed, not measured: batch 1 of a 512 px tile (weights, int8 cache with its workspace, prefill)
    stays under 14 GB with int8 weights and 10 GB with int4, and int4 fits a 12 GiB card."""
    vocab = Vocab.from_names(synthetic_vocabulary(), bos=0)
    prompt_len = len(conversation(tiny_tokenizer(), vocab, torch.zeros(64, 64, dtype=torch.long))[0])
    args = (SEVEN_B, torch.bfloat16, prompt_len, SamplingConfig(), 512, 512)
    prefill = prefill_bytes(SEVEN_B, prompt_len, torch.bfloat16)
    int8_tile, bf16_tile = tile_cache_bytes(*args, "int8") + prefill, tile_cache_bytes(*args) + prefill
    assert tile_cache_bytes(*args, "int8") < 0.55 * tile_cache_bytes(*args)
    weights = {m: weight_bytes(SEVEN_B, m, torch.bfloat16) for m in ("int8", "int4")}
    assert weights["int8"] + int8_tile < 14e9 and weights["int4"] + int8_tile < 10e9
    assert auto_batch_size(12 * GiB, int8_tile, weights=weights["int4"]) == 1
    assert tiles_that_fit(12 * GiB, bf16_tile, weights["int4"]) == 0
