"""Speed and memory of 512 px restoration at PURE's real size (Chameleon-7B, random weights) on a GPU.

Random weights give the same arithmetic per token as the released checkpoint, so per-step time and
memory are those of the real model (the released weights never reach our machines). Guidance on,
bf16, the prompt of a 512 px tile (instruction + a 64x64-code LQ block + answer text + the image's
start and size tokens), then the image body (4,161 tokens). In order:

1. ``graph_matches_eager``: a small fp32 model on the device writes the same tokens with and
   without CUDA-graph capture (the check that capture changes nothing);
2. ``copy_gbps``: the device's copy bandwidth (bytes read + written per second, a large ``copy_``);
3. the reference-style loop (two unbatched model calls per guided step, Python processors;
   ``bench_generate.reference_style``) for ``--reference-steps`` steps at batch 1;
4. our loop at each ``--batch`` size, timed over ``--steps`` steps between two host reads (the cache
   sized for the whole tile, as in a real run), with the warm-up (prefill + graph capture) reported;
5. a whole 512 px tile at batch 1: seconds and peak memory;
6. per batch size, the bandwidth floor: bytes read per step (weights except the embedding table, plus
   every cache column attention reads) divided by the measured copy bandwidth;
7. ``backbone.quantize`` (issue 14), per ``--quantize`` mode (none, int8, int4), after the model above is
   freed: a fresh 7B with its decoder projections quantised (:func:`pure.quantize.quantize_decoder_`), at
   batch 1: tokens/s over ``--steps`` steps, and the peak memory of the whole run (weights, the cache
   sized for a whole tile, prefill, graph capture; allocated and reserved by PyTorch); before that, that
   CUDA-graph decoding with int8 or int4 weights writes the eager loop's tokens (small bf16 model).
   Each mode is measured once per ``--kv-cache`` mode (``restore.kv_cache``: model, int8) on the same
   model, the peak counted afresh for each; stage 1 also checks capture with an int8 cache.

A batch size that does not fit in memory is reported as such. ``--dry-run`` runs every stage on a
tiny model on the CPU (a check that the script works, not a measurement).

    python benchmarks/bench_7b.py --json bench_7b.json          # on a GPU (not yet run on one)
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
from pure.kv_cache import GuidedKVCache
from pure.memory import release_memory, stored_bytes
from pure.model import PureChameleon
from pure.quantize import QuantizeError, check_quantize, quantize_decoder_
from pure.sequence import block_length, conversation
from pure.tiny import synthetic_vocabulary, tiny_backbone_config, tiny_tokenizer
from pure.vocab import Vocab


class _Enough(Exception):
    """Raised from ``on_step`` to end a timed window early."""


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


def copy_bandwidth(device: str, gib: float, sync) -> float:
    """Bytes read plus written per second by ``dst.copy_(src)`` of ``gib`` GiB, best of 10."""
    src = torch.empty(int(gib * 2**30), dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    best = float("inf")
    for _ in range(11):
        sync()
        start = time.perf_counter()
        dst.copy_(src)
        sync()
        best = min(best, time.perf_counter() - start)
    return 2 * src.numel() / best


def windowed_rate(model, prompts, vocab, sampling, steps: int, sync, kv_cache="model") -> tuple[float, float]:
    """Tokens/s of our loop over ``steps`` steps between two host reads, and the seconds before the
    first read (prefill, graph capture and the first ``SYNC_EVERY`` steps)."""
    marks: list[tuple[float, int]] = []
    done = [0]

    def clock(n: int) -> None:
        sync()
        done[0] += n
        marks.append((time.perf_counter(), done[0]))
        if done[0] >= steps + marks[0][1]:
            raise _Enough

    start = time.perf_counter()
    try:
        generate(model, prompts, vocab, sampling, on_step=clock, cuda_graph=True, kv_cache=kv_cache)
    except _Enough:
        pass
    (t0, s0), (t1, s1) = marks[0], marks[-1]
    return len(prompts) * (s1 - s0) / (t1 - t0), t0 - start


def graph_matches_eager(
    device: str,
    shape: tuple[int, int, int, int],
    dtype: torch.dtype = torch.float32,
    quantize: str = "none",
    kv_cache: str = "model",
) -> bool:
    """A small model (fp32 unless told; decoder projections quantised as ``quantize`` says; the KV cache
    stored as ``kv_cache`` says) writes the same tokens with and without CUDA-graph capture."""
    model = build_model(*shape, device, dtype)
    quantize_decoder_(model, quantize)
    vocab = Vocab.from_names(synthetic_vocabulary(), bos=0)
    prompt, _ = conversation(tiny_tokenizer(), vocab, torch.zeros(8, 8, dtype=torch.long), "A cat.")
    runs = [
        generate(
            model,
            [prompt, prompt[3:]],
            vocab,
            SamplingConfig(max_new_tokens=120),
            image_grids=(2, 2),
            max_text_tokens=4,
            stop_after_image=True,
            cuda_graph=graph,
            kv_cache=kv_cache,
        ).ids
        for graph in (False, True)
    ]
    return all(torch.equal(a, b) for a, b in zip(*runs, strict=True))


def quantized_run(
    mode: str, shape, small_shape, device: str, dtype, prompt, vocab, sampling, steps, sync, kv_caches
) -> dict:
    """Stage 7 for one ``backbone.quantize`` mode: graph-vs-eager tokens on a small model (int8 and int4;
    stage 1 checks unquantised weights), then a fresh model of ``shape`` quantised, at batch 1 and per
    ``restore.kv_cache`` mode in ``kv_caches``: tokens/s over ``steps`` steps and the run's peak memory
    (GiB; counted from after quantising, so it is restoring's peak, not loading's)."""
    try:
        check_quantize(mode, device, dtype)
    except QuantizeError as err:
        return {"error": str(err)}
    cuda = device.startswith("cuda")
    row: dict = {}
    if mode != "none":  # stage 1 checked unquantised capture
        row["graph_matches_eager"] = graph_matches_eager(device, small_shape, dtype, mode)
    model = build_model(*shape, device, dtype)
    quantize_decoder_(model, mode)
    release_memory()
    row["weights_gib"] = stored_bytes(model) / 2**30
    for kv_cache in kv_caches:
        run: dict = {}
        release_memory()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        try:
            rate, warmup = windowed_rate(model, [prompt], vocab, sampling, steps, sync, kv_cache)
            run.update(tokens_per_s=rate, first_sync_s=warmup, fits=True)
        except torch.OutOfMemoryError:
            run["fits"] = False
        if cuda:
            run["peak_allocated_gib"] = torch.cuda.max_memory_allocated() / 2**30
            run["peak_reserved_gib"] = torch.cuda.max_memory_reserved() / 2**30
        row[f"kv_{kv_cache}"] = run
    del model
    release_memory()
    return row


def describe_quantized(mode: str, row: dict) -> str:
    """The printed lines of stage 7 for one mode: one per KV cache mode."""
    if "error" in row:
        return f"quantize={mode}: {row['error']}"
    graph = f", CUDA graph gives the eager tokens: {row['graph_matches_eager']}" if mode != "none" else ""
    lines = []
    for key, run in row.items():
        if not key.startswith("kv_"):
            continue
        speed = f"{run['tokens_per_s']:7.1f} tokens/s" if run["fits"] else "does not fit"
        peak = "not measured (CPU)"
        if "peak_allocated_gib" in run:
            peak = (
                f"{run['peak_allocated_gib']:.2f} / {run['peak_reserved_gib']:.2f} GiB (allocated / reserved)"
            )
        lines.append(
            f"quantize={mode}, kv_cache={key[3:]}, batch 1: {speed}, weights {row['weights_gib']:.2f} GiB, "
            f"peak {peak}{graph}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 4, 8, 16], help="batch sizes (tiles)")
    parser.add_argument("--steps", type=int, default=256, help="timed decoding steps per batch size")
    parser.add_argument(
        "--reference-steps", type=int, default=64, help="timed steps of the reference-style loop"
    )
    parser.add_argument("--no-full-tile", action="store_true", help="skip the whole 512 px tile at batch 1")
    parser.add_argument(
        "--full-budget",
        type=float,
        default=200.0,
        help="skip the whole tile when batch 1 predicts more seconds",
    )
    parser.add_argument(
        "--quantize",
        nargs="*",
        default=["none", "int8", "int4"],
        help="backbone.quantize modes measured at batch 1 (stage 7; none given: skip it)",
    )
    parser.add_argument(
        "--kv-cache",
        nargs="+",
        default=["model", "int8"],
        choices=["model", "int8"],
        help="restore.kv_cache modes measured per quantize mode in stage 7",
    )
    parser.add_argument("--dry-run", action="store_true", help="every stage on a tiny model on the CPU")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    if args.dry_run:
        args.device, shape, size, copy_gib = "cpu", (64, 128, 2, 1), 64, 0.01
        args.steps, args.reference_steps, args.batch = 16, 4, [1, 2]
    else:
        shape, size, copy_gib = (4096, 11008, 32, 32), 512, 4.0
    cuda = args.device.startswith("cuda")
    dtype = torch.bfloat16 if cuda else torch.float32
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    results: dict = {"device": args.device, "gpu": torch.cuda.get_device_name() if cuda else "cpu"}
    results["graph_matches_eager"] = graph_matches_eager(args.device, (256, 512, 4, 4) if cuda else shape)
    print(f"CUDA graph gives the eager loop's tokens: {results['graph_matches_eager']}")
    if "int8" in args.kv_cache:
        small = (256, 512, 4, 4) if cuda else shape
        results["graph_matches_eager_int8_cache"] = graph_matches_eager(args.device, small, kv_cache="int8")
        print(f"... with an int8 KV cache: {results['graph_matches_eager_int8_cache']}")
    results["copy_gbps"] = copy_bandwidth(args.device, copy_gib, sync) / 1e9
    print(f"copy bandwidth: {results['copy_gbps']:.0f} GB/s (read + write)")

    tick = time.perf_counter()
    model = build_model(*shape, args.device, dtype)
    results["params"] = sum(p.numel() for p in model.parameters())
    print(f"built {results['params'] / 1e9:.2f}B parameters in {time.perf_counter() - tick:.1f}s")
    vocab = Vocab.from_names(synthetic_vocabulary(), bos=0)
    latent, grids = size // 8, size // 32
    lq = torch.randint(0, 16384, (latent, latent), generator=torch.Generator().manual_seed(0))
    prompt, _ = conversation(
        tiny_tokenizer(), vocab, lq, "Medium blur, small noise. A photo of a lion in the grass."
    )
    prompt = torch.cat(
        [prompt, torch.tensor([vocab.image_start, vocab.size_token(grids), vocab.size_token(grids)])]
    )
    body = block_length(latent, latent) - 3
    sampling = SamplingConfig(max_new_tokens=body)
    results.update(prompt_tokens=len(prompt), image_tokens=body)

    generator = torch.Generator(args.device).manual_seed(0)
    sync()
    start = time.perf_counter()
    reference_style(model, prompt, vocab, sampling, args.reference_steps, generator)
    sync()
    reference = args.reference_steps / (time.perf_counter() - start)
    results["reference_style_tokens_per_s"] = reference
    print(f"reference-style loop, batch 1: {reference:7.1f} tokens/s")

    weight_bytes = sum(
        p.numel() * p.element_size() for n, p in model.named_parameters() if "embed_tokens" not in n
    )
    for batch in args.batch:
        cache = GuidedKVCache(model.config, batch, len(prompt) + body, 3 + body, dtype, "meta")
        floor = batch / ((weight_bytes + cache.nbytes) / (results["copy_gbps"] * 1e9))
        key = f"batch{batch}"
        try:
            rate, warmup = windowed_rate(model, [prompt] * batch, vocab, sampling, args.steps, sync)
        except torch.OutOfMemoryError:
            results[key] = {"fits": False, "kv_cache_gib": cache.nbytes / 2**30}
            print(f"pure loop, batch {batch}: does not fit ({cache.nbytes / 2**30:.1f} GiB of cache)")
            torch.cuda.empty_cache()
            continue
        results[key] = {
            "tokens_per_s": rate,
            "first_sync_s": warmup,
            "ratio_to_reference_style": rate / reference,
            "kv_cache_gib": cache.nbytes / 2**30,
            "floor_tokens_per_s": floor,
            "fraction_of_floor": rate / floor,
        }
        print(
            f"pure loop, batch {batch}: {rate:7.1f} tokens/s ({rate / reference:.1f}x reference-style; floor "
            f"{floor:.0f}, {100 * rate / floor:.0f}%), first sync after {warmup:.1f}s, "
            f"cache {cache.nbytes / 2**30:.1f} GiB"
        )

    expected = body / results["batch1"]["tokens_per_s"] if "tokens_per_s" in results.get("batch1", {}) else 0
    if not args.no_full_tile and expected < args.full_budget:
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        sync()
        start = time.perf_counter()
        out = generate(model, [prompt], vocab, sampling, cuda_graph=True)
        sync()
        results["full_tile_s"] = time.perf_counter() - start
        results["full_tile_tokens"] = len(out.ids[0])
        results["full_tile_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
        print(
            f"whole {size} px tile, batch 1: {results['full_tile_s']:.1f}s for {len(out.ids[0])} tokens "
            f"(warm-up {out.warmup_s:.1f}s), peak memory {results['full_tile_peak_gib'] or 0:.1f} GiB"
        )
    if args.quantize:
        del model
        release_memory()
        results["quantize"] = {}
        for mode in args.quantize:
            small = (256, 512, 4, 4) if cuda else shape
            row = quantized_run(
                mode,
                shape,
                small,
                args.device,
                dtype,
                prompt,
                vocab,
                sampling,
                args.steps,
                sync,
                args.kv_cache,
            )
            results["quantize"][mode] = row
            print(describe_quantized(mode, row))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
