"""Does graph compilation speed up the CPU decode step? The eager step against the same step compiled
with ``torch.compile(fullgraph=True)`` (inductor's CPU backend, static shapes: attention over the whole
cache), on bench_generate.py's thin model (32 layers, hidden 64, PURE's full vocabulary), alternating
eager and compiled runs; prints ms per step, the compile time and whether the tokens are the same.

    python benchmarks/cpu_compile_step.py [--steps 200] [--repeats 2] [--cpp-wrapper]

Compiling takes minutes (inductor builds C++ kernels with the system compiler). Not a library path:
CPU runs stay eager (``restore.compile`` only captures on CUDA).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from bench_generate import MODELS, image_prompt
from torch.nn.attention import sdpa_kernel

from pure import generate as G
from pure.config import SamplingConfig
from pure.model import load_backbone, load_tokenizer, load_vocab
from pure.tiny import write_tiny_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=200, help="decoding steps timed per run")
    parser.add_argument("--repeats", type=int, default=2, help="eager/compiled pairs, alternating")
    parser.add_argument(
        "--cpp-wrapper",
        action="store_true",
        help="inductor's C++ wrapper: the compiled step calls its kernels from C++, not Python",
    )
    args = parser.parse_args()
    if args.cpp_wrapper:
        import torch._inductor.config as inductor_config

        inductor_config.cpp_wrapper = True
    shape = MODELS["thin"]
    with tempfile.TemporaryDirectory() as folder:
        write_tiny_checkpoint(
            folder,
            hidden_size=shape["hidden"],
            intermediate_size=shape["hidden"] * 2,
            num_layers=shape["layers"],
            num_heads=shape["heads"],
        )
        model = load_backbone(folder, dtype=torch.float32)
        tokenizer = load_tokenizer(folder)
        vocab = load_vocab(tokenizer, folder)
    prompt = image_prompt(tokenizer, vocab, 128)
    sampling = SamplingConfig(max_new_tokens=args.steps + 8)
    compiled = torch.compile(G._step, fullgraph=True, dynamic=False)

    @torch.inference_mode()
    def run(mode: str) -> tuple[float, float, torch.Tensor]:
        with G.use_guided_attention(model), sdpa_kernel(G.DECODE_ATTENTION):
            cache, d, rules = G._start(model, [prompt], vocab, sampling, None, None, None, 512, False)
            start = time.perf_counter()
            if mode == "compiled":  # first calls compile (or reuse the compiled code)
                for _ in range(3):
                    compiled(model, cache, d, rules, None)
            else:
                for step in range(3):
                    G._step(model, cache, d, rules, G._eager_limits(cache, rules, step))
            warm = time.perf_counter() - start
            start = time.perf_counter()
            for step in range(3, 3 + args.steps):
                if mode == "compiled":
                    compiled(model, cache, d, rules, None)
                else:
                    G._step(model, cache, d, rules, G._eager_limits(cache, rules, step))
            return (
                1000 * (time.perf_counter() - start) / args.steps,
                warm,
                d.out_ids[0, : 3 + args.steps].clone(),
            )

    print(
        f"thin model, 128 px prompt ({len(prompt)} tokens), {args.steps} steps, "
        f"{torch.get_num_threads()} threads{', C++ wrapper' if args.cpp_wrapper else ''}"
    )
    tokens = {}
    for _ in range(args.repeats):
        for mode in ("eager", "compiled"):
            ms, warm, tokens[mode] = run(mode)
            print(f"  {mode:8s} {ms:6.2f} ms per step   first 3 steps {warm:6.1f} s", flush=True)
    print("same tokens:", torch.equal(tokens["eager"], tokens["compiled"]))


if __name__ == "__main__":
    main()
