"""Deterministic, name-addressed weights for tiny models (CPU tests, ``source: tiny``).

Every tensor is drawn from its own generator seeded by ``(seed, crc32(name))`` and scaled by
the first matching rule below. This is the rule the reference fixtures in
``../shared/reference`` were made with, so a model whose parameters carry the reference's
names and shapes reproduces the reference's numbers exactly.

1. ``...codebook_used``                       -> zeros (training-only VQ usage counter)
2. contains ``quantize.embedding``/``codebook`` -> z      (VQ codebook)
3. contains ``embed_tokens``/``embedding``    -> 0.02 z  (token tables)
4. ends in ``bias``                           -> 0.02 z
5. contains ``norm`` and ends in ``weight``   -> 1 + 0.1 z
6. rank >= 2                                  -> z / sqrt(fan_in), fan_in = prod(shape[1:])
7. anything else                              -> 0.02 z
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch


def det_tensor(name: str, shape: Sequence[int], seed: int) -> torch.Tensor:
    """A float32 tensor of ``shape`` determined only by ``name`` and ``seed``."""
    shape = tuple(int(s) for s in shape)
    z = np.random.default_rng([int(seed), zlib.crc32(name.encode("utf-8"))]).standard_normal(shape)
    if name.endswith("codebook_used"):
        values = np.zeros(shape)
    elif "quantize.embedding" in name or "codebook" in name:
        values = z
    elif "embed_tokens" in name or "embedding" in name:
        values = 0.02 * z
    elif name.endswith("bias"):
        values = 0.02 * z
    elif "norm" in name and name.endswith("weight"):
        values = 1.0 + 0.1 * z
    elif len(shape) >= 2:
        values = z / math.sqrt(math.prod(shape[1:]))
    else:
        values = 0.02 * z
    return torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))


def det_state_dict(shapes: Mapping[str, Sequence[int]], seed: int) -> dict[str, torch.Tensor]:
    """``{name: shape}`` -> ``{name: float32 tensor}`` by :func:`det_tensor`."""
    return {name: det_tensor(name, shape, seed) for name, shape in shapes.items()}


# --------------------------------------------------------------------------------------------
# A tiny backbone checkpoint in the real on-disk layout: config.json with the Lumina/PURE fields,
# sharded safetensors with an index, the reference's parameter names and [1, head_dim] qk-norm
# shapes, and a tokenizer whose 73,728-entry vocabulary is laid out like PURE's.

TINY_VOCAB_SIZE = 73728
"""Entries of PURE's vocabulary (Chameleon's 65,536 plus the second 8,192 image tokens)."""
SPECIAL_IDS = {"<s>": 0, "</s>": 1, "<pad>": 2, "<unk>": 3, "<eoss>": 8196, "<racm3:break>": 8197}
"""Chameleon's special tokens at their ids in PURE's vocabulary."""
FIRST_IMAGE_ID = 4
"""Id of the image token of code 0; codes below ``HALF_CODEBOOK`` follow it."""
SECOND_IMAGE_ID = 65536
"""Id of the image token of code ``HALF_CODEBOOK``; PURE appended the codebook's second half here."""
HALF_CODEBOOK = 8192
"""Image tokens in each of the two id ranges."""
RESERVED_OFFSET = 4
"""``<reservedNNNNN>`` has id ``NNNNN + RESERVED_OFFSET`` (Chameleon's layout)."""
FIRST_RESERVED_ID = 8198
"""Id of the first reserved token, right after ``<racm3:break>``."""
BYTE_TOKENS_START = 10000
"""Id of the first byte-level text piece of the tiny tokenizer (an illustrative place)."""
END_OF_TURN_ID = 8706 + RESERVED_OFFSET
"""Id of ``<reserved08706>``, the end of a turn (config.json's ``eos_token_id``)."""
IMAGE_PLACEHOLDER_ID = 8711
"""Id of Chameleon's ``<image>`` placeholder in ``vocabulary_map`` (unused by PURE)."""


def synthetic_vocabulary() -> dict[str, int]:
    """``{name: id}`` with PURE's special-token ids and two IMGIMG ranges (4..8195, 65536..73727).

    Image token of code c: id ``4 + c`` for c < 8192, else ``65536 + c - 8192`` (the fixtures'
    illustrative map). Byte-level text pieces sit at 10000..10255; other ids are fillers.
    """
    from tokenizers.pre_tokenizers import ByteLevel

    from pure.vocab import image_token_name

    names = dict(SPECIAL_IDS)
    for code in range(2 * HALF_CODEBOOK):
        names[image_token_name(code)] = (
            FIRST_IMAGE_ID + code if code < HALF_CODEBOOK else SECOND_IMAGE_ID + code - HALF_CODEBOOK
        )
    for idx in range(FIRST_RESERVED_ID, BYTE_TOKENS_START):
        names[f"<reserved{idx - RESERVED_OFFSET:05d}>"] = idx
    for offset, char in enumerate(sorted(ByteLevel.alphabet())):
        names[char] = BYTE_TOKENS_START + offset
    for idx in range(BYTE_TOKENS_START + 256, SECOND_IMAGE_ID):
        names[f"<unused{idx}>"] = idx
    assert len(names) == TINY_VOCAB_SIZE
    return names


def tiny_tokenizer():
    """A byte-level ``PreTrainedTokenizerFast`` over :func:`synthetic_vocabulary` (no merges)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE(vocab=synthetic_vocabulary(), merges=[], unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )


def tiny_backbone_config(
    hidden_size: int = 64, intermediate_size: int = 128, num_layers: int = 2, num_heads: int = 4
) -> dict:
    """config.json fields of a tiny Lumina-mGPT/PURE checkpoint (as the reference writes them)."""
    return {
        "architectures": ["ChameleonXLLMXForConditionalGeneration"],
        "model_type": "chameleon",
        "vocab_size": TINY_VOCAB_SIZE,
        "hidden_size": hidden_size,
        "intermediate_size": intermediate_size,
        "num_hidden_layers": num_layers,
        "num_attention_heads": num_heads,
        "num_key_value_heads": num_heads,
        "max_position_embeddings": 10240,
        "hidden_act": "silu",
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "model_parallel_size": 1,
        "swin_norm": False,
        "qk_layernorm": True,
        "mask_image_logits": False,
        "z_loss_weight": 0.0,
        "dropout": 0.0,
        "apply_lora": False,
        "tie_word_embeddings": False,
        "vocabulary_map": {"<image>": IMAGE_PLACEHOLDER_ID},
        "bos_token_id": SPECIAL_IDS["<s>"],
        "eos_token_id": END_OF_TURN_ID,
        "torch_dtype": "float32",
    }


def reference_backbone_shapes(config: dict) -> dict[str, list[int]]:
    """Parameter names and shapes as the reference stores them (qk-norm as [1, head_dim])."""
    hidden, inter, vocab = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    head_dim = hidden // config["num_attention_heads"]
    shapes = {"model.embed_tokens.weight": [vocab, hidden]}
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            shapes[p + f"self_attn.{proj}.weight"] = [hidden, hidden]
        for norm in ("q_norm", "k_norm"):
            shapes[p + f"self_attn.{norm}.weight"] = [1, head_dim]
            shapes[p + f"self_attn.{norm}.bias"] = [1, head_dim]
        shapes[p + "mlp.gate_proj.weight"] = [inter, hidden]
        shapes[p + "mlp.up_proj.weight"] = [inter, hidden]
        shapes[p + "mlp.down_proj.weight"] = [hidden, inter]
        shapes[p + "input_layernorm.weight"] = [hidden]
        shapes[p + "post_attention_layernorm.weight"] = [hidden]
    shapes["model.norm.weight"] = [hidden]
    shapes["lm_head.weight"] = [vocab, hidden]
    return shapes


def write_backbone_checkpoint(folder, config: dict, state_dict: dict[str, torch.Tensor], shards: int = 2):
    """Write ``config.json``, ``model-0000k-of-0000n.safetensors`` shards and their index to ``folder``."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    names = list(state_dict)
    per_shard = -(-len(names) // shards)
    weight_map = {}
    for k in range(shards):
        file = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
        part = {n: state_dict[n].contiguous() for n in names[k * per_shard : (k + 1) * per_shard]}
        save_file(part, str(folder / file), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, file))
    index = {
        "metadata": {"total_size": sum(t.numel() * t.element_size() for t in state_dict.values())},
        "weight_map": weight_map,
    }
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")
    return folder


def write_tiny_checkpoint(folder, seed: int = 0, **sizes) -> Path:
    """A complete tiny model folder (config, shards, index, tokenizer) with deterministic weights."""
    config = tiny_backbone_config(**sizes)
    write_backbone_checkpoint(folder, config, det_state_dict(reference_backbone_shapes(config), seed))
    tiny_tokenizer().save_pretrained(str(folder))
    return Path(folder)
