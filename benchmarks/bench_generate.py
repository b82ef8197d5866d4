"""Tokens per second of three decode loops on the same model, prompt and image, measured in one run.

- ``pure``: the library's loop (:func:`pure.generate.generate`): a static two-part KV cache, a step
  with no host synchronisation, one batched ``[cond; uncond]`` forward, several images per batch;
- ``former``: the loop before it (``benchmarks/baseline_generate.py``): a growing ``DynamicCache``,
  masks rebuilt per step, host-side grammar, Python loops over rows, one ``torch.Generator`` per row;
- ``reference-style``: what the reference's sampler does per step (:func:`reference_style`): a
  second, unbatched model call for the unconditional branch, processors that re-derive the grammar by
  scanning the ids in Python, full-vocabulary masks from a Python list, a draw over the whole
  vocabulary. It restores one image at a time, so its rate at batch B is its batch-1 rate.

Two models with PURE's full 73,728-entry vocabulary and random weights: ``tiny`` (4 layers, hidden
256) and ``thin`` (32 layers, hidden 64: the per-step host overhead of a 32-layer model). The prompt
is PURE's instruction, an LQ block of ``--size`` px, the answer text and the image's start and size
tokens; every loop then writes the image body (guidance on). Runs alternate between the loops
(A B C A B C ...) and the best of ``--repeats`` is reported, with ratios against the other two.

``--per-step`` reports the decoding steps alone: each loop's time for ``--steps`` steps minus its time
for 2 (both best of ``--repeats``), so the prefill, which the loops also do differently, drops out.
``--open-rows R`` puts the first R rows of the image into the prompt (random codes): the steps then
continue a long context, the cost late in a tile.

    python benchmarks/bench_generate.py                     # both models, 128 px, batch 1 4 8
    python benchmarks/bench_generate.py --models thin --size 512 --steps 256 --batch 1
    python benchmarks/bench_generate.py --models thin --size 512 --open-rows 62 --steps 96 --per-step
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch
from baseline_generate import baseline_generate
from torch.nn.attention import sdpa_kernel
from transformers import DynamicCache

from pure.config import SamplingConfig
from pure.generate import DECODE_ATTENTION, generate
from pure.model import load_backbone, load_tokenizer, load_vocab
from pure.sequence import block_length, conversation
from pure.tiny import write_tiny_checkpoint

MODELS = {"tiny": dict(hidden=256, layers=4, heads=4), "thin": dict(hidden=64, layers=32, heads=1)}
"""Model shapes: hidden size, decoder layers, attention heads (MLP 2x hidden)."""


@torch.inference_mode()
@sdpa_kernel(DECODE_ATTENTION)  # the same attention kernels as our loop, for a fair comparison
def reference_style(model, prompt, vocab, sampling, steps, generator):
    """The straightforward loop: two model calls per guided step, Python-side processors."""
    device = model.device
    image_ids = vocab.image_ids.tolist()
    ids = prompt.tolist()
    cond_cache, uncond_cache = DynamicCache(config=model.config), DynamicCache(config=model.config)
    logits = model(input_ids=torch.tensor([ids], device=device), cache=cond_cache, use_cache=True).logits[
        :, -1
    ]
    uncond_fed = 0
    for _ in range(steps):
        scores = logits.float()
        is_open = ids.count(vocab.image_start) == ids.count(vocab.image_end) + 1
        s = len(ids) - 1 - ids[::-1].index(vocab.image_start) if is_open else 0
        n = len(ids) - s - 1
        if is_open and n >= 2:
            new = ids[s + uncond_fed :]
            uncond = model(
                input_ids=torch.tensor([new], device=device),
                cache=uncond_cache,
                use_cache=True,
                position_ids=torch.arange(uncond_fed, uncond_fed + len(new), device=device)[None],
            )
            uncond_fed += len(new)
            scores = (
                sampling.cfg_scale * (scores - uncond.logits[:, -1].float()) + uncond.logits[:, -1].float()
            )
            h, w = 4 * int(vocab.grids_of_id[ids[s + 1]]), 4 * int(vocab.grids_of_id[ids[s + 2]])
            t = n - 2
            forced = (
                vocab.end_of_row
                if (t + 1) % (w + 1) == 0
                else vocab.image_end
                if t + 1 == (w + 1) * h + 1
                else -1
            )
            mask = torch.full_like(scores, float("-inf"))
            if forced >= 0:
                mask[:, forced] = 0
                scores = mask
            else:
                mask[:, image_ids] = 0
                scores = scores + mask
        p = torch.softmax(scores, -1)
        ent = float(-(p * torch.log(p + 1e-10)).sum())
        k = (
            round(1 + 1999 * torch.sigmoid(torch.tensor(min(max(ent, 0.0), 10.0) - 5)).item())
            if is_open
            else 1
        )
        threshold = torch.topk(scores, k).values[..., -1, None]
        scores = scores.masked_fill(scores < threshold, float("-inf")) / sampling.temperature
        token = int(torch.multinomial(torch.softmax(scores, -1)[0], 1, generator=generator))
        ids.append(token)
        logits = model(
            input_ids=torch.tensor([[token]], device=device), cache=cond_cache, use_cache=True
        ).logits[:, -1]
    return ids


def image_prompt(tokenizer, vocab, size: int, open_rows: int = 0) -> torch.Tensor:
    """PURE's prompt for a ``size`` px LQ tile, the answer text, and the HQ image opened with its sizes,
    followed by ``open_rows`` rows of random codes (each closed by the end-of-row token)."""
    latent, grids = size // 8, size // 32
    generator = torch.Generator().manual_seed(0)
    lq = torch.randint(0, 16384, (latent, latent), generator=generator)
    prompt, _ = conversation(tokenizer, vocab, lq, "Small blur, small noise. A photo.")
    opened = torch.tensor([vocab.image_start, vocab.size_token(grids), vocab.size_token(grids)])
    rows = vocab.image_ids[torch.randint(0, 16384, (open_rows, latent), generator=generator)]
    rows = torch.cat([rows, torch.full((open_rows, 1), vocab.end_of_row)], 1).flatten()
    return torch.cat([prompt, opened, rows])


def bench_model(name: str, args) -> list[dict]:
    shape = MODELS[name]
    with tempfile.TemporaryDirectory() as folder:
        write_tiny_checkpoint(
            folder,
            hidden_size=shape["hidden"],
            intermediate_size=shape["hidden"] * 2,
            num_layers=shape["layers"],
            num_heads=shape["heads"],
        )
        model = load_backbone(folder, device=args.device, dtype=torch.float32)
        tokenizer = load_tokenizer(folder)
        vocab = load_vocab(tokenizer, folder)
    latent = args.size // 8
    if not 0 <= args.open_rows < latent:
        raise SystemExit(f"--open-rows must be in [0, {latent - 1}] for a {args.size} px image")
    prompt = image_prompt(tokenizer, vocab, args.size, args.open_rows).to(args.device)
    steps = args.steps or block_length(latent, latent) - 3 - args.open_rows * (latent + 1)
    sampling = SamplingConfig(max_new_tokens=steps)
    print(
        f"\n{name}: {shape['layers']} layers, hidden {shape['hidden']}, {args.size} px image, "
        f"prompt {len(prompt)} tokens, {steps} steps, guidance on, {torch.get_num_threads()} threads"
        + (", decoding steps only (prefill subtracted)" if args.per_step else "")
    )

    def loops(batch: int, sampling: SamplingConfig, steps: int) -> dict:
        prompts = [prompt] * batch
        runs = {
            "pure": lambda: generate(model, prompts, vocab, sampling),
            "former": lambda: baseline_generate(model, prompts, vocab, sampling),
        }
        if batch == 1:
            generator = torch.Generator(args.device).manual_seed(0)
            runs["reference-style"] = lambda: reference_style(
                model, prompt, vocab, sampling, steps, generator
            )
        return runs

    def timed(fn) -> float:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    short = SamplingConfig(max_new_tokens=8)  # warm-up: first calls allocate and load kernels
    generate(model, [prompt], vocab, short)
    baseline_generate(model, [prompt], vocab, short)
    rows, reference_rate = [], None

    def best_of(runs: dict) -> dict:
        best = dict.fromkeys(runs, float("inf"))
        for _ in range(args.repeats):  # alternate A B C A B C
            for loop, fn in runs.items():
                best[loop] = min(best[loop], timed(fn))
        return best

    for batch in args.batch:
        best = best_of(loops(batch, sampling, steps))
        if args.per_step:  # minus the same loops' prefill and first 2 steps
            two = best_of(loops(batch, SamplingConfig(max_new_tokens=2), 2))
            best = {loop: seconds - two[loop] for loop, seconds in best.items()}
        timed_steps = steps - 2 if args.per_step else steps
        rates = {loop: batch * timed_steps / seconds for loop, seconds in best.items()}
        reference_rate = rates.get("reference-style", reference_rate)
        row = {"model": name, "batch": batch, "steps": steps, "size": args.size, **rates}
        row.update(per_step=args.per_step, open_rows=args.open_rows)
        row["reference-style"] = reference_rate
        row["pure/former"] = rates["pure"] / rates["former"]
        row["pure/reference-style"] = rates["pure"] / reference_rate
        rows.append(row)
        print(
            f"  batch {batch}: pure {rates['pure']:8.1f} tok/s   former {rates['former']:8.1f}   "
            f"reference-style {reference_rate:8.1f}   pure/former {row['pure/former']:5.2f}x   "
            f"pure/reference-style {row['pure/reference-style']:5.2f}x   "
            f"({1000 * best['pure'] / timed_steps:.1f} ms per step)"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda (fp32 either way)")
    parser.add_argument(
        "--models", nargs="+", default=list(MODELS), choices=list(MODELS), help="which models"
    )
    parser.add_argument("--size", type=int, default=128, help="image side in pixels (multiple of 32)")
    parser.add_argument("--steps", type=int, default=0, help="decoding steps (0: the whole image body)")
    parser.add_argument(
        "--batch", type=int, nargs="+", default=[1, 4, 8], help="batch sizes (1 must come first)"
    )
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per loop (the best is kept)")
    parser.add_argument(
        "--per-step", action="store_true", help="time the decoding steps alone (minus a 2-step run)"
    )
    parser.add_argument(
        "--open-rows", type=int, default=0, help="image rows already in the prompt (late in a tile)"
    )
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()
    if args.batch[0] != 1:
        parser.error("--batch must start with 1 (the reference-style loop runs there)")
    rows = [row for name in args.models for row in bench_model(name, args)]
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
