"""Where one decoding step's time goes (torch.profiler), for the model built by bench_7b.py.

python benchmarks/profile_step.py --device cuda [--layers 32]
"""

from __future__ import annotations

import argparse

import torch
from bench_7b import build_model

from pure.config import SamplingConfig
from pure.generate import generate
from pure.sequence import conversation
from pure.tiny import synthetic_vocabulary, tiny_tokenizer
from pure.vocab import Vocab


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    model = build_model(4096, 11008, args.layers, 32, args.device, dtype)
    print("parameter dtype", next(model.parameters()).dtype, "attention", model.config._attn_implementation)
    vocab = Vocab.from_names(synthetic_vocabulary(), bos=0)
    lq = torch.randint(0, 16384, (64, 64), generator=torch.Generator().manual_seed(0))
    prompt, _ = conversation(tiny_tokenizer(), vocab, lq, "Medium blur.")
    prompt = torch.cat(
        [prompt, torch.tensor([vocab.image_start, vocab.size_token(16), vocab.size_token(16)])]
    )
    generate(model, [prompt], vocab, SamplingConfig(max_new_tokens=4))
    activities = [torch.profiler.ProfilerActivity.CPU]
    if args.device.startswith("cuda"):
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        generate(model, [prompt], vocab, SamplingConfig(max_new_tokens=args.steps))
    sort = "cuda_time_total" if args.device.startswith("cuda") else "cpu_time_total"
    print(prof.key_averages().table(sort_by=sort, row_limit=18, max_name_column_width=60))
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12, max_name_column_width=60))


if __name__ == "__main__":
    main()
