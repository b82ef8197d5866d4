"""Tokens per second of pure's decode loop against a reference-style loop, same model and prompt.

The baseline does what the reference's sampler does per step: a second, unbatched model call for
the unconditional branch, and processors that re-derive the grammar state by scanning the ids in
Python and rebuild full-vocabulary masks from a Python list of image ids; it draws over the whole
vocabulary. Ours: one batched ``[cond; uncond]`` forward, incremental grammar state, tensor rules,
a draw over the kept candidates only, and several images per batch.

    python benchmarks/bench_generate.py [--device cuda] [--hidden 1024 --layers 8] [--size 256]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from torch.nn.attention import sdpa_kernel
from transformers import DynamicCache

from pure.config import SamplingConfig
from pure.generate import DECODE_ATTENTION, generate
from pure.model import load_backbone, load_tokenizer, load_vocab
from pure.sequence import block_length, conversation
from pure.tiny import write_tiny_checkpoint


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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--hidden", type=int, default=64, help="hidden size of the random model")
    parser.add_argument("--layers", type=int, default=2, help="decoder layers of the random model")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels (multiple of 32)")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 4], help="batch sizes for our loop")
    args = parser.parse_args()
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    with tempfile.TemporaryDirectory() as folder:
        write_tiny_checkpoint(
            folder,
            hidden_size=args.hidden,
            intermediate_size=args.hidden * 2,
            num_layers=args.layers,
            num_heads=max(1, args.hidden // 64),
        )
        model = load_backbone(folder, device=args.device, dtype=dtype)
        tokenizer = load_tokenizer(folder)
        vocab = load_vocab(tokenizer, folder)
    latent, grids = args.size // 8, args.size // 32
    lq = torch.randint(0, 16384, (latent, latent), generator=torch.Generator().manual_seed(0))
    prompt, _ = conversation(tokenizer, vocab, lq, "Small blur, small noise. A photo.")
    prompt = torch.cat(
        [prompt, torch.tensor([vocab.image_start, vocab.size_token(grids), vocab.size_token(grids)])]
    )
    steps = block_length(latent, latent) - 3
    sampling = SamplingConfig(max_new_tokens=steps)

    def timed(fn):
        fn()  # warm-up
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - start

    generator = torch.Generator(args.device).manual_seed(0)
    base = timed(lambda: reference_style(model, prompt, vocab, sampling, steps, generator))
    print(
        f"device={args.device} hidden={args.hidden} layers={args.layers} image={args.size}px "
        f"steps={steps} dtype={dtype}"
    )
    print(f"reference-style loop, batch 1: {steps / base:8.1f} tokens/s")
    for batch in args.batch:
        ours = timed(lambda b=batch: generate(model, [prompt] * b, vocab, sampling))
        rate = batch * steps / ours
        print(
            f"pure loop, batch {batch}:            {rate:8.1f} tokens/s   ratio {rate / (steps / base):5.2f}x"
        )


if __name__ == "__main__":
    main()
