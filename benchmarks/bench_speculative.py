"""Speculative decoding (``pure/speculative.py``) against plain decoding, measured in one run.

For each model: forward passes per image (after the prefill, while the row ran), the acceptance rate
(accepted / tested drafts) and wall time, for every draft source against the plain loop on the same
prompts and seeds (guidance on, fp32 on the CPU). Three models:

- ``random``: ``bench_generate``'s tiny model (4 layers, hidden 256, the full 73,728-entry
  vocabulary, random weights), one ``--size`` px image per row: drafts are almost never accepted,
  so this measures the overhead (the issue's target: at most 10% wall time);
- ``copy``: a tiny model with a small vocabulary, over-fitted here on the CPU (``--train-steps``)
  to copy its LQ block into its HQ block: the case where drafts from the LQ image are right (the
  issue's target: at least 3x fewer forward passes);
- ``7b``: PURE's size with random weights (``bench_7b.build_model``, bf16) on a GPU, the overhead of
  a 512 px tile with CUDA graphs; "not measured (no GPU)" without CUDA.

    python benchmarks/bench_speculative.py                          # the three rows
    python benchmarks/bench_speculative.py --models 7b --json out.json
"""

from __future__ import annotations

import time

import torch

from pure.generate import generate
from pure.model import PureChameleon
from pure.sequence import IGNORE_INDEX, image_block
from pure.tiny import tiny_backbone_config
from pure.vocab import (
    END_OF_ROW,
    END_OF_TURN,
    IMAGE_END,
    IMAGE_START,
    Vocab,
    image_token_name,
    size_token_name,
)

SPECIALS = ("<s>", IMAGE_START, IMAGE_END, END_OF_ROW, END_OF_TURN)
"""The named tokens of a small vocabulary, at ids 0-4; size tokens and image tokens follow."""


def small_vocabulary(codes: int, max_grids: int = 4) -> Vocab:
    """A vocabulary of ``5 + max_grids + codes`` tokens with PURE's named tokens, size tokens for 1 to
    ``max_grids`` grids and ``codes`` image tokens (a VQ codebook of that size)."""
    names = {name: i for i, name in enumerate(SPECIALS)}
    names.update({size_token_name(n): len(SPECIALS) + n - 1 for n in range(1, max_grids + 1)})
    names.update({image_token_name(c): len(names) + c for c in range(codes)})
    return Vocab.from_names(names, bos=0, codebook_size=codes)


def small_model(
    vocab: Vocab, hidden: int = 32, layers: int = 2, heads: int = 2, seed: int = 0
) -> PureChameleon:
    """A random Chameleon over ``vocab`` (fp32, CPU, eval mode)."""
    config = tiny_backbone_config(hidden, 2 * hidden, layers, heads)
    config.update(
        vocab_size=vocab.size, vocabulary_map={}, bos_token_id=vocab.bos, eos_token_id=vocab.end_of_turn
    )
    torch.manual_seed(seed)
    from transformers import ChameleonConfig

    model = PureChameleon(ChameleonConfig(**config))
    model.model.vqmodel = None
    return model.eval()


def copy_prompt(vocab: Vocab, lq: torch.Tensor) -> torch.Tensor:
    """PURE's prompt without text: BOS, the LQ block of codes ``lq`` ``[h, w]``, end-of-turn."""
    return torch.cat([torch.tensor([vocab.bos]), image_block(lq, vocab), torch.tensor([vocab.end_of_turn])])


def train_copy(vocab: Vocab, side: int, steps: int, batch: int = 32, seed: int = 0) -> PureChameleon:
    """A small model over-fitted to answer every :func:`copy_prompt` with its LQ block (then end-of-turn);
    ``side`` latent codes per side, random codes each step. Prints the final loss."""
    model = small_model(vocab, hidden=64, layers=2, heads=4, seed=seed).train()
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(seed)
    for step in range(steps):
        codes = torch.randint(0, len(vocab.code_to_id), (batch, side, side), generator=generator)
        prompts = [copy_prompt(vocab, c) for c in codes]
        answers = [torch.cat([image_block(c, vocab), torch.tensor([vocab.end_of_turn])]) for c in codes]
        ids = torch.stack([torch.cat([p, a]) for p, a in zip(prompts, answers, strict=True)])
        labels = ids.clone()
        labels[:, : len(prompts[0])] = IGNORE_INDEX
        for group in optimiser.param_groups:
            group["lr"] = 3e-3 * min(1.0, (step + 1) / 50) * (1 - step / steps)
        loss = model(input_ids=ids, labels=labels).loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    print(f"  copy model trained for {steps} steps, final loss {loss.item():.4f}")
    return model.eval()


def compare(model, prompts, vocab, sampling, layout: dict, sources, draft_len: int, sync) -> list[dict]:
    """Plain decoding and each speculative source on the same prompts and seeds; one row each."""
    seeds = list(range(len(prompts)))
    rows = []
    for source in ("none", *sources):
        sync()
        start = time.perf_counter()
        out = generate(
            model, prompts, vocab, sampling, seeds, speculative=source, draft_len=draft_len, **layout
        )
        sync()
        seconds = time.perf_counter() - start
        tokens = sum(len(ids) for ids in out.ids)
        forwards = sum(out.forwards) if source != "none" else tokens - len(prompts)  # first token: prefill
        drafted = sum(out.drafted) if source != "none" else 0
        rows.append(
            {
                "source": source,
                "images": len(prompts),
                "tokens_per_image": tokens / len(prompts),
                "forwards_per_image": forwards / len(prompts),
                "acceptance": sum(out.accepted) / drafted if drafted else None,
                "seconds": seconds,
            }
        )
    plain = rows[0]
    for row in rows:
        row["forwards_ratio"] = plain["forwards_per_image"] / row["forwards_per_image"]
        row["time_ratio"] = row["seconds"] / plain["seconds"]
        acceptance = "-" if row["acceptance"] is None else f"{row['acceptance']:.3f}"
        print(
            f"  {row['source']:>9}: {row['forwards_per_image']:7.1f} forwards/image "
            f"({row['forwards_ratio']:4.2f}x fewer), acceptance {acceptance}, "
            f"{row['seconds']:6.2f}s ({100 * (row['time_ratio'] - 1):+5.1f}% vs plain)"
        )
    return rows
