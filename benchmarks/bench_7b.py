"""Speed and memory of a 512 px restoration at PURE's real size (Chameleon-7B, random weights) on a GPU.

Random weights give the same arithmetic per token as the released checkpoint, so per-step time and
memory are those of the real model (the released weights never reach our machines). Measures, on
the same prompt (instruction + a 64x64-code LQ block + answer text + image start and size tokens):

- the reference-style loop (two unbatched model calls per guided step, Python-side processors;
  ``bench_generate.reference_style``) for ``--steps`` steps, batch 1;
- our loop for ``--steps`` steps at each ``--batch`` size;
- our loop over a whole 512 px image (4,161 body tokens) at batch 1, when the first measurement
  says it fits in ``--full-budget`` seconds: the measured time per image and peak memory.

    python benchmarks/bench_7b.py --device cuda
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from bench_generate import reference_style
from transformers import ChameleonConfig

from pure.config import SamplingConfig
from pure.generate import generate
from pure.model import PureChameleon
from pure.sequence import block_length, conversation
from pure.tiny import synthetic_vocabulary, tiny_backbone_config, tiny_tokenizer
from pure.vocab import Vocab


def build_model(hidden: int, inter: int, layers: int, heads: int, device: str, dtype: torch.dtype):
    config = ChameleonConfig(**tiny_backbone_config(hidden, inter, layers, heads))
    config._attn_implementation = "sdpa"
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    with torch.device(device):
        model = PureChameleon(config)
    torch.set_default_dtype(default)
    model.model.vqmodel = None
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--hidden", type=int, default=4096)
    parser.add_argument("--intermediate", type=int, default=11008)
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--heads", type=int, default=32)
    parser.add_argument("--steps", type=int, default=256, help="decoding steps per timed run")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 4])
    parser.add_argument(
        "--full-budget", type=float, default=150.0, help="seconds allowed for the whole image"
    )
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    cuda = args.device.startswith("cuda")
    dtype = torch.bfloat16 if cuda else torch.float32
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    tick = time.perf_counter()
    model = build_model(args.hidden, args.intermediate, args.layers, args.heads, args.device, dtype)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"built {n_params / 1e9:.2f}B parameters in {time.perf_counter() - tick:.1f}s on {args.device}")
    vocab = Vocab.from_names(synthetic_vocabulary(), bos=0)
    tokenizer = tiny_tokenizer()
    lq = torch.randint(0, 16384, (64, 64), generator=torch.Generator().manual_seed(0))
    prompt, _ = conversation(
        tokenizer, vocab, lq, "Medium blur, small noise. A photo of a lion in the grass."
    )
    prompt = torch.cat(
        [prompt, torch.tensor([vocab.image_start, vocab.size_token(16), vocab.size_token(16)])]
    )
    results = {
        "params": n_params,
        "prompt_tokens": len(prompt),
        "steps": args.steps,
        "device": args.device,
        "gpu": torch.cuda.get_device_name() if cuda else "cpu",
    }

    def timed(fn):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        return time.perf_counter() - start

    sampling = SamplingConfig(max_new_tokens=args.steps)
    generate(model, [prompt], vocab, SamplingConfig(max_new_tokens=8))  # warm-up
    generator = torch.Generator(args.device).manual_seed(0)
    base = timed(lambda: reference_style(model, prompt, vocab, sampling, args.steps, generator))
    results["reference_style_tokens_per_s"] = args.steps / base
    base_rate = args.steps / base
    print(f"reference-style loop, batch 1: {base_rate:7.1f} tokens/s ({1000 / base_rate:.1f} ms/token)")
    for batch in args.batch:
        ours = timed(lambda b=batch: generate(model, [prompt] * b, vocab, sampling))
        rate = batch * args.steps / ours
        results[f"ours_batch{batch}_tokens_per_s"] = rate
        print(f"pure loop, batch {batch}:            {rate:7.1f} tokens/s   ratio {rate / base_rate:.2f}x")

    per_step = 1 / results["ours_batch1_tokens_per_s"]
    body = block_length(64, 64) - 3
    if per_step * body < args.full_budget:
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        full = timed(lambda: generate(model, [prompt], vocab, SamplingConfig(max_new_tokens=body)))
        results["full_image_s"] = full
        results["full_image_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
        print(
            f"whole 512 px image, batch 1: {full:.1f}s, peak memory "
            f"{results['full_image_peak_gib'] or 0:.1f} GiB (ours, guidance on)"
        )
    else:
        print(f"whole image skipped: about {per_step * body:.0f}s expected")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
