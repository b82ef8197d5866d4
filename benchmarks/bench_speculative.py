"""Speculative decoding (``pure/speculative.py``) against plain decoding, measured in one run.

For each model, on the same prompts and seeds (guidance on): forward passes per image (model calls
after the prefill while the row ran: plain decoding makes one per token), the acceptance rate
(accepted / tested drafts), wall time (best of ``--repeats`` alternating runs) and ratios against
plain decoding. Each draft source runs with its default rule (a row drafts while its drafts'
acceptance probability is at least ``MIN_ACCEPTANCE``); ``always`` drafts wherever possible
(``min_acceptance=0``). Three models:

- ``random``: ``bench_generate``'s tiny model (4 layers, hidden 256, the full 73,728-entry
  vocabulary, random weights, fp32) writing the body of one ``--size`` px image per row: drafts
  are almost never accepted, so this measures the overhead (the issue's target: at most 10%);
- ``copy``: a small model (2 layers, hidden 64, ``--copy-codes`` image tokens) over-fitted here on
  the CPU (``--copy-steps``) to answer each prompt with a copy of its LQ block: where LQ drafts are
  right (the issue's target: at least 3x fewer forward passes);
- ``7b``: PURE's size with random weights (bf16, CUDA graphs) on a GPU, ``--gpu-tokens`` tokens of a
  512 px tile's body at batch 1: the overhead where a wide forward costs about what a narrow one
  does; "not measured (no GPU)" without CUDA (``--dry-run``: a tiny model on the CPU, to check the
  script).

    python benchmarks/bench_speculative.py                       # the three models
    python benchmarks/bench_speculative.py --models 7b --json runs/gpu_check/gpu_check.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import traceback
from pathlib import Path

import torch
from bench_generate import image_prompt
from transformers import ChameleonConfig

from pure.config import SamplingConfig
from pure.generate import generate
from pure.model import PureChameleon, load_backbone, load_tokenizer, load_vocab
from pure.sequence import IGNORE_INDEX, block_length, image_block, parse_image_block
from pure.speculative import MIN_ACCEPTANCE, SOURCES, generate_speculative
from pure.tiny import synthetic_vocabulary, tiny_backbone_config, tiny_tokenizer, write_tiny_checkpoint
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
    vocab: Vocab, hidden: int = 32, layers: int = 2, heads: int = 2, seed: int = 0, rope_theta: float = 1e4
) -> PureChameleon:
    """A random Chameleon over ``vocab`` (fp32, CPU, eval mode)."""
    config = tiny_backbone_config(hidden, 2 * hidden, layers, heads)
    config.update(
        vocab_size=vocab.size,
        vocabulary_map={},
        bos_token_id=vocab.bos,
        eos_token_id=vocab.end_of_turn,
        rope_theta=rope_theta,
    )
    torch.manual_seed(seed)
    model = PureChameleon(ChameleonConfig(**config))
    model.model.vqmodel = None
    return model.eval()


def copy_prompt(vocab: Vocab, lq: torch.Tensor) -> torch.Tensor:
    """PURE's prompt without text: BOS, the LQ block of codes ``lq`` ``[h, w]``, end-of-turn."""
    return torch.cat([torch.tensor([vocab.bos]), image_block(lq, vocab), torch.tensor([vocab.end_of_turn])])


def train_copy(vocab: Vocab, side: int, steps: int, batch: int = 16, seed: int = 0) -> PureChameleon:
    """A small model over-fitted to answer every :func:`copy_prompt` with its LQ block, then end-of-turn
    (``side`` x ``side`` random codes, new ones every step; AdamW, lr 5e-3 with 20 warm-up steps and a
    linear decay). Its RoPE base is 100 instead of 10,000: a copy over a fixed distance is then found
    in about 100 steps instead of 400. Prints the final loss."""
    model = small_model(vocab, hidden=64, layers=2, heads=4, seed=seed, rope_theta=100.0).train()
    optimiser = torch.optim.AdamW(model.parameters(), lr=5e-3)
    generator = torch.Generator().manual_seed(seed)
    for step in range(steps):
        codes = torch.randint(0, len(vocab.code_to_id), (batch, side, side), generator=generator)
        prompts = [copy_prompt(vocab, c) for c in codes]
        answers = [torch.cat([image_block(c, vocab), torch.tensor([vocab.end_of_turn])]) for c in codes]
        ids = torch.stack([torch.cat([p, a]) for p, a in zip(prompts, answers, strict=True)])
        labels = ids.clone()
        labels[:, : len(prompts[0])] = IGNORE_INDEX
        for group in optimiser.param_groups:
            group["lr"] = 5e-3 * min(1.0, (step + 1) / 20) * (1 - step / steps)
        loss = model(input_ids=ids, labels=labels).loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    print(f"  trained for {steps} steps: final loss {loss.item():.4f}")
    return model.eval()


def runs(draft_len: int) -> dict[str, dict | None]:
    """Plain decoding (None), each draft source with its default rule, and LQ + Jacobi drafting always."""
    named: dict[str, dict | None] = {"plain": None}
    named.update({source: dict(source=source, draft_len=draft_len) for source in SOURCES[1:]})
    named["lq+jacobi, always"] = dict(source="lq+jacobi", draft_len=draft_len, min_acceptance=0.0)
    return named


def compare(model, prompts, vocab, common: dict, runs: dict, repeats: int, sync) -> list[dict]:
    """Each of ``runs`` (name -> options of :func:`generate_speculative`, None for plain decoding; both
    also get ``common``) on the same prompts and seeds, alternating ``repeats`` times; one row each,
    ratios against the first."""
    seeds = list(range(len(prompts)))
    outputs, best = {}, dict.fromkeys(runs, float("inf"))
    names = list(runs)
    for repeat in range(repeats):  # alternating, each round starting one run later
        for name in names[repeat % len(names) :] + names[: repeat % len(names)]:
            options = runs[name]
            sync()
            start = time.perf_counter()
            if options is None:
                outputs[name] = generate(model, prompts, vocab, seeds=seeds, **common)
            else:
                outputs[name] = generate_speculative(model, prompts, vocab, seeds=seeds, **common, **options)
            sync()
            best[name] = min(best[name], time.perf_counter() - start)
    rows = []
    for name, out in outputs.items():
        tokens = sum(len(ids) for ids in out.ids)
        forwards = sum(out.forwards) if runs[name] is not None else tokens
        drafted = sum(out.drafted) if runs[name] is not None else 0
        rows.append(
            {
                "run": name,
                "images": len(prompts),
                "tokens_per_image": tokens / len(prompts),
                "forwards_per_image": forwards / len(prompts),
                "acceptance": sum(out.accepted) / drafted if drafted else None,
                "seconds": best[name],
                "warmup_seconds": out.warmup_s,
            }
        )
    for row in rows:
        row["forwards_ratio"] = rows[0]["forwards_per_image"] / row["forwards_per_image"]
        row["time_ratio"] = row["seconds"] / rows[0]["seconds"]
        acceptance = "-" if row["acceptance"] is None else f"{row['acceptance']:.3f}"
        print(
            f"  {row['run']:>17}: {row['forwards_per_image']:7.1f} forwards/image "
            f"({row['forwards_ratio']:5.2f}x fewer), acceptance {acceptance:>5}, "
            f"{row['seconds']:7.2f}s ({100 * (row['time_ratio'] - 1):+6.1f}% vs plain)"
        )
    return rows


def bench_random(args) -> list[dict]:
    with tempfile.TemporaryDirectory() as folder:
        write_tiny_checkpoint(folder, hidden_size=256, intermediate_size=512, num_layers=4, num_heads=4)
        model = load_backbone(folder, dtype=torch.float32)
        tokenizer = load_tokenizer(folder)
        vocab = load_vocab(tokenizer, folder)
    body = block_length(args.size // 8, args.size // 8) - 3
    print(
        f"\nrandom: 4 layers, hidden 256, {args.images} image(s) of {args.size} px ({body} tokens), "
        f"{torch.get_num_threads()} threads"
    )
    prompts = [image_prompt(tokenizer, vocab, args.size)] * args.images
    common = dict(sampling=SamplingConfig(max_new_tokens=body))
    generate(model, prompts[:1], vocab, SamplingConfig(max_new_tokens=8))  # warm-up: first calls allocate
    return compare(model, prompts, vocab, common, runs(args.draft_len), args.repeats, _no_sync)


def bench_copy(args) -> list[dict]:
    side = args.copy_side
    print(
        f"\ncopy: 2 layers, hidden 64, {args.copy_codes} codes, {args.images} image(s) of {side}x{side} codes"
    )
    vocab = small_vocabulary(args.copy_codes)
    model = train_copy(vocab, side, args.copy_steps)
    generator = torch.Generator().manual_seed(1)
    lq = [torch.randint(0, args.copy_codes, (side, side), generator=generator) for _ in range(args.images)]
    prompts = [copy_prompt(vocab, codes) for codes in lq]
    grids = side // 4
    common = dict(
        sampling=SamplingConfig(), image_grids=(grids, grids), max_text_tokens=0, stop_after_image=True
    )
    plain = generate(model, prompts, vocab, seeds=list(range(len(prompts))), **common)
    copied = sum(
        float((parse_image_block(ids, vocab) == codes).float().mean())
        for ids, codes in zip(plain.ids, lq, strict=True)
    )
    print(f"  plain decoding copies {100 * copied / len(lq):.1f}% of the LQ codes")
    return compare(model, prompts, vocab, common, runs(args.draft_len), args.repeats, _no_sync)


def bench_7b(args) -> list[dict]:
    from bench_7b import build_model

    if args.dry_run:
        device, shape, size, dtype = "cpu", (64, 128, 2, 1), 64, torch.float32
    elif torch.cuda.is_available():
        device, shape, size, dtype = "cuda", (4096, 11008, 32, 32), 512, torch.bfloat16
    else:
        print("\n7b: not measured (no GPU)")
        return [{"run": "not measured (no GPU)"}]
    sync = torch.cuda.synchronize if device == "cuda" else _no_sync
    matches = graph_matches_eager(device, (256, 512, 4, 4) if device == "cuda" else shape)
    checked = "not checked (no CUDA graphs on the CPU)" if matches is None else matches
    print(f"\n7b: CUDA graphs give the eager loop's tokens with drafts: {checked}", flush=True)
    model = build_model(*shape, device, dtype)
    vocab = Vocab.from_names(synthetic_vocabulary(), bos=0)
    prompt = image_prompt(tiny_tokenizer(), vocab, size).to(device)
    tokens = min(args.gpu_tokens, block_length(size // 8, size // 8) - 3)
    print(
        f"\n7b: {shape[2]} layers, hidden {shape[0]}, {device}, {tokens} tokens of a {size} px tile, batch 1"
    )
    common = dict(sampling=SamplingConfig(max_new_tokens=tokens), cuda_graph=True)
    generate(model, [prompt], vocab, SamplingConfig(max_new_tokens=8), cuda_graph=True)  # warm-up
    rows = compare(model, [prompt], vocab, common, runs(args.draft_len), args.repeats, sync)
    for row in rows:
        row["graph_matches_eager"] = matches
        row["tokens_per_s"] = row["tokens_per_image"] / (row["seconds"] - row["warmup_seconds"])
        print(f"  {row['run']:>17}: {row['tokens_per_s']:7.1f} tokens/s after the warm-up")
    return rows


def graph_matches_eager(device: str, shape: tuple[int, int, int, int]) -> bool | None:
    """A small fp32 model drafting wherever it can writes the same tokens with and without CUDA graphs
    (two prompts of different lengths; None on the CPU, which has no graphs: both runs are eager)."""
    from bench_7b import build_model

    model = build_model(*shape, device, torch.float32)
    vocab = Vocab.from_names(synthetic_vocabulary(), bos=0)
    prompt = image_prompt(tiny_tokenizer(), vocab, 64).to(device)
    options = dict(source="lq+jacobi", draft_len=8, min_acceptance=0.0)
    runs = [
        generate_speculative(
            model, [prompt, prompt[3:]], vocab, SamplingConfig(max_new_tokens=73), cuda_graph=graph, **options
        ).ids
        for graph in (False, True)
    ]
    same = all(torch.equal(a, b) for a, b in zip(*runs, strict=True))
    return same if device == "cuda" else None


def _no_sync() -> None:
    pass


BENCHES = {"random": bench_random, "copy": bench_copy, "7b": bench_7b}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=list(BENCHES), choices=list(BENCHES))
    parser.add_argument("--draft-len", type=int, default=8, help="restore.draft_len")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels for the random model")
    parser.add_argument("--images", type=int, default=2, help="images (rows of one batch) per CPU model")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per loop (the best is kept)")
    parser.add_argument("--copy-steps", type=int, default=150, help="training steps of the copy model")
    parser.add_argument("--copy-codes", type=int, default=16, help="image tokens of the copy model")
    parser.add_argument("--copy-side", type=int, default=8, help="latent codes per side (a multiple of 4)")
    parser.add_argument("--gpu-tokens", type=int, default=512, help="tokens of the tile the 7b row writes")
    parser.add_argument("--dry-run", action="store_true", help="the 7b row on a tiny CPU model (a check)")
    parser.add_argument("--json", help="add the rows under 'speculative' to this JSON file (made if missing)")
    args = parser.parse_args()
    print(f"min_acceptance {MIN_ACCEPTANCE}, draft_len {args.draft_len}, guidance on")
    results = {}
    for name in args.models:
        try:
            results[name] = BENCHES[name](args)
        except Exception as err:  # noqa: BLE001 - recorded with the others' results
            traceback.print_exc()
            results[name] = [{"run": "error", "error": f"{type(err).__name__}: {err}"}]
    if args.json:
        path = Path(args.json)
        merged = json.loads(path.read_text()) if path.is_file() else {}
        merged["speculative"] = results
        path.write_text(json.dumps(merged, indent=2))
    if any(row.get("run") == "error" for rows in results.values() for row in rows):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
