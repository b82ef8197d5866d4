"""Speed and memory of 512 px restoration at PURE's real size (Chameleon-7B, random weights) on a GPU.

Random weights give the same arithmetic per token as the released checkpoint, so per-step time and
memory are those of the real model (the released weights never reach our machines). Guidance on,
bf16, the prompt of a 512 px tile (instruction + a 64x64-code LQ block + answer text + the image's
start and size tokens), then the image body (4,161 tokens). In order:

1. ``graph_matches_eager``: a small fp32 model on the device writes the same tokens with and
   without CUDA-graph capture (the check that capture changes nothing; None on the CPU, which has no
   graphs);
2. ``copy_gbps``: the device's copy bandwidth (bytes read + written per second, a large ``copy_``);
3. the reference-style loop (two unbatched model calls per guided step, Python processors;
   ``bench_generate.reference_style``) for ``--reference-steps`` steps at batch 1, after two untimed
   steps (its prefill is in the timed window, as in a real run);
4. our loop at each ``--batch`` size (1, 8, 4, 16: the targets first), timed over ``--steps`` steps
   between two host reads (the cache sized for the whole tile, as in a real run), with the warm-up
   (prefill + graph capture) and the peak memory reported, and (6) the bandwidth floor: bytes read per
   step (weights except the embedding table, plus every cache column attention reads) divided by the
   measured copy bandwidth;
5. a whole 512 px tile at batch 1 (``full_tile``): seconds and peak memory, when batch 1 predicts at
   most ``--full-budget`` seconds;
7. ``backbone.quantize`` (issue 14), per ``--quantize`` mode (none, int8, int4) at batch 1: ``none``
   measures the model above (before stage 5); int8 and int4 each build a fresh 7B after it is freed,
   with its decoder projections quantised (:func:`pure.quantize.quantize_decoder_`): tokens/s over
   ``--steps`` steps, and the peak memory of the whole run (weights, the cache sized for a whole tile,
   prefill, graph capture; allocated and reserved by PyTorch); before that, that CUDA-graph decoding with
   int8 or int4 weights writes the eager loop's tokens (small bf16 model). Each mode is measured once
   per ``--kv-cache`` mode (``restore.kv_cache``: model, int8) on the same model, the peak counted afresh
   for each; stage 1 also checks capture with an int8 cache.

A batch size that does not fit in memory is reported as such. The JSON is rewritten after every stage
(:class:`Stages`), so a crash or a kill keeps what was measured; a stage that raises is recorded as an
error and the next one runs; with ``--deadline`` a stage whose estimated time would pass it is skipped
(and recorded as skipped), so the run ends in time to keep its results. ``--dry-run`` runs every stage
on a tiny model on the CPU (a check that the script works, not a measurement).

    python benchmarks/bench_7b.py --json bench_7b.json --deadline 300   # on a GPU (not yet run on one)
"""

from __future__ import annotations

import argparse
import json
import os
import time
import traceback
from collections.abc import Callable

import torch
import transformers
from bench_generate import reference_style
from transformers import ChameleonConfig

from pure.config import SamplingConfig
from pure.generate import generate
from pure.kv_cache import GuidedKVCache
from pure.memory import is_out_of_memory, release_memory, stored_bytes
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
    try:
        with torch.device(device):
            model = PureChameleon(config)
    finally:
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


def windowed_rate(
    model, prompts, vocab, sampling, steps: int, sync, kv_cache="model"
) -> tuple[float, float, int]:
    """Tokens/s of our loop over about ``steps`` steps between two host reads (fewer when the answer
    ends first), the seconds before the first read (prefill, graph capture and the first ``SYNC_EVERY``
    steps), and the steps timed."""
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
    if len(marks) < 2:
        raise RuntimeError(f"the answer ended after {done[0]} steps: too few to time (--steps {steps})")
    (t0, s0), (t1, s1) = marks[0], marks[-1]
    return len(prompts) * (s1 - s0) / (t1 - t0), t0 - start, s1 - s0


def graph_matches_eager(
    device: str,
    shape: tuple[int, int, int, int],
    dtype: torch.dtype = torch.float32,
    quantize: str = "none",
    kv_cache: str = "model",
) -> bool:
    """A small model (fp32 unless told; decoder projections quantised as ``quantize`` says; the KV cache
    stored as ``kv_cache`` says) writes the same tokens with and without CUDA-graph capture. None off
    CUDA: both runs are eager there (the check of the script, not of capture)."""
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
    same = all(torch.equal(a, b) for a, b in zip(*runs, strict=True))
    return same if model.device.type == "cuda" else None


def quantized_run(
    mode: str, model, small_shape, device: str, dtype, prompt, vocab, sampling, steps, sync, kv_caches
) -> dict:
    """Stage 7 for one ``backbone.quantize`` mode: graph-vs-eager tokens on a small model (int8 and int4;
    stage 1 checks unquantised weights), then the model at batch 1 per ``restore.kv_cache`` mode in
    ``kv_caches``: tokens/s over ``steps`` steps and the run's peak memory (GiB; counted from after
    quantising, so it is restoring's peak, not loading's). ``model``: an unquantised model to measure as
    it is (``none``), or the shape (hidden, intermediate, layers, heads) of a fresh one to build, quantise
    and free."""
    try:
        check_quantize(mode, device, dtype)
    except QuantizeError as err:
        return {"error": str(err)}
    cuda = device.startswith("cuda")
    row: dict = {}
    if mode != "none":  # stage 1 checked unquantised capture
        row["graph_matches_eager"] = graph_matches_eager(device, small_shape, dtype, mode)
    built = isinstance(model, tuple)
    if built:
        model = build_model(*model, device, dtype)
        quantize_decoder_(model, mode)
    release_memory()
    row["weights_gib"] = stored_bytes(model) / 2**30
    for kv_cache in kv_caches:
        run: dict = {}
        release_memory()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        try:
            rate, warmup, timed = windowed_rate(model, [prompt], vocab, sampling, steps, sync, kv_cache)
            run.update(tokens_per_s=rate, first_sync_s=warmup, timed_steps=timed, fits=True)
        except RuntimeError as err:
            if not is_out_of_memory(err):
                raise
            run["fits"] = False
        if cuda:
            run["peak_allocated_gib"] = torch.cuda.max_memory_allocated() / 2**30
            run["peak_reserved_gib"] = torch.cuda.max_memory_reserved() / 2**30
        row[f"kv_{kv_cache}"] = run
    if built:
        del model
        release_memory()
    return row


def describe_quantized(mode: str, row: dict) -> str:
    """The printed lines of stage 7 for one mode: one per KV cache mode."""
    if "error" in row or "skipped" in row:
        return f"quantize={mode}: {row.get('error') or row['skipped']}"
    graph = (
        f", CUDA graph gives the eager tokens: {_checked(row['graph_matches_eager'])}"
        if mode != "none"
        else ""
    )
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


class Stages:
    """Runs the stages in order and keeps their results safe: the JSON is rewritten (atomically) after
    every stage; a stage that raises is recorded as ``{"error": ...}`` and the next one runs; a stage
    whose estimated seconds would pass ``deadline`` (seconds since start; None: no limit) is recorded as
    ``{"skipped": ...}``; after an error that leaves the device unusable, the rest is skipped. Every
    printed line carries the seconds since start, and printing is flushed, so a run killed at its time
    limit still shows how far it got."""

    def __init__(self, path: str | None, deadline: float | None, sync) -> None:
        self.results: dict = {}
        self.path, self.deadline, self.sync = path, deadline, sync
        self.start = time.perf_counter()
        self.broken: str | None = None
        self.failed: list[str] = []  # the keys of stages that raised

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def log(self, line: str) -> None:
        print(f"[{self.elapsed():6.1f}s] {line}", flush=True)

    def fits(self, seconds: float) -> bool:
        """Whether ``seconds`` more fit before the deadline."""
        return self.deadline is None or self.elapsed() + seconds <= self.deadline

    def run(self, key: str, stage: Callable[[], object], cost_s: float = 0.0, into: dict | None = None):
        """Run ``stage`` and store what it returns under ``key`` of ``into`` (default: the results);
        ``cost_s``: its estimated seconds. Returns what was stored."""
        into = self.results if into is None else into
        if self.broken:
            into[key] = {"skipped": f"the device failed earlier ({self.broken})"}
        elif not self.fits(cost_s):
            into[key] = {"skipped": f"deadline: about {cost_s:.0f}s needed after {self.elapsed():.0f}s"}
        else:
            try:
                into[key] = stage()
            except Exception as err:  # noqa: BLE001 - recorded, and the next stage runs
                traceback.print_exc()
                into[key] = {"error": f"{type(err).__name__}: {err}"}
                self.failed.append(key)
                try:
                    release_memory()
                    self.sync()
                except Exception as fatal:  # noqa: BLE001 - a sticky CUDA error: nothing else can run
                    self.broken = f"{type(fatal).__name__}: {fatal}"
        if isinstance(into[key], dict) and {"error", "skipped"} & set(into[key]):
            self.log(f"{key}: {into[key]}")
        self.save()
        return into[key]

    def save(self) -> None:
        if self.path:
            temporary = f"{self.path}.tmp"
            with open(temporary, "w") as f:
                json.dump(self.results, f, indent=2)
            os.replace(temporary, self.path)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda")
    parser.add_argument(
        "--batch", type=int, nargs="+", default=[1, 8, 4, 16], help="batch sizes (tiles), in this order"
    )
    parser.add_argument("--steps", type=int, default=256, help="timed decoding steps per batch size")
    parser.add_argument(
        "--reference-steps", type=int, default=64, help="timed steps of the reference-style loop"
    )
    parser.add_argument("--no-full-tile", action="store_true", help="skip the whole 512 px tile at batch 1")
    parser.add_argument(
        "--full-budget",
        type=float,
        default=120.0,
        help="skip the whole tile when batch 1 predicts more seconds (or gave no rate)",
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
    parser.add_argument(
        "--deadline",
        type=float,
        help="seconds from start after which no stage starts that is estimated to end later (default: none)",
    )
    parser.add_argument("--dry-run", action="store_true", help="every stage on a tiny model on the CPU")
    parser.add_argument("--json", help="write the results here (rewritten after every stage)")
    args = parser.parse_args()
    if args.dry_run:
        args.device, shape, size, copy_gib = "cpu", (64, 128, 2, 1), 64, 0.01
        args.steps, args.reference_steps, args.batch = 16, 4, [1, 2]
    else:
        shape, size, copy_gib = (4096, 11008, 32, 32), 512, 4.0
    cuda = args.device.startswith("cuda")
    dtype = torch.bfloat16 if cuda else torch.float32
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    small = (256, 512, 4, 4) if cuda else shape
    stages = Stages(args.json, args.deadline, sync)
    results, log = stages.results, stages.log
    results.update(device=args.device, gpu=torch.cuda.get_device_name() if cuda else "cpu")
    results.update(torch=torch.__version__, transformers=transformers.__version__)
    log(f"{results['gpu']}, torch {torch.__version__}, transformers {transformers.__version__}")

    # 1-2: capture changes nothing; the copy bandwidth
    stages.run("graph_matches_eager", lambda: graph_matches_eager(args.device, small))
    log(f"CUDA graph gives the eager loop's tokens: {_checked(results['graph_matches_eager'])}")
    if "int8" in args.kv_cache:
        stages.run(
            "graph_matches_eager_int8_cache", lambda: graph_matches_eager(args.device, small, kv_cache="int8")
        )
        log(f"... with an int8 KV cache: {_checked(results['graph_matches_eager_int8_cache'])}")
    if stages.run("copy_gbps", lambda: copy_bandwidth(args.device, copy_gib, sync) / 1e9) is not None:
        log(f"copy bandwidth: {results['copy_gbps']:.0f} GB/s (read + write)")

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

    tick = time.perf_counter()
    model = build_model(*shape, args.device, dtype)
    build_s = time.perf_counter() - tick
    results.update(params=sum(p.numel() for p in model.parameters()), build_s=build_s)
    log(f"built {results['params'] / 1e9:.2f}B parameters in {build_s:.1f}s")

    # 3: the reference-style loop
    def reference() -> float:
        generator = torch.Generator(args.device).manual_seed(0)
        reference_style(model, prompt, vocab, SamplingConfig(max_new_tokens=2), 2, generator)  # first calls
        sync()
        start = time.perf_counter()
        reference_style(model, prompt, vocab, sampling, args.reference_steps, generator)
        sync()
        return args.reference_steps / (time.perf_counter() - start)

    rate_ref = stages.run("reference_style_tokens_per_s", reference)
    if rate_ref is not None and not isinstance(rate_ref, dict):
        log(f"reference-style loop, batch 1: {rate_ref:7.1f} tokens/s (its prefill included)")

    # 4 and 6: our loop per batch size, with the bandwidth floor
    weight_bytes = sum(
        p.numel() * p.element_size() for n, p in model.named_parameters() if "embed_tokens" not in n
    )
    window_s: dict[int, float] = {}

    def batch_run(batch: int) -> dict:
        cache = GuidedKVCache(model.config, batch, len(prompt) + body, 3 + body, dtype, "meta")
        row = {"kv_cache_gib": cache.nbytes / 2**30}
        if "copy_gbps" in results and not isinstance(results["copy_gbps"], dict):
            row["floor_tokens_per_s"] = batch / ((weight_bytes + cache.nbytes) / (results["copy_gbps"] * 1e9))
        release_memory()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        tick = time.perf_counter()
        try:
            rate, warmup, timed = windowed_rate(model, [prompt] * batch, vocab, sampling, args.steps, sync)
        except RuntimeError as err:
            if not is_out_of_memory(err):
                raise
            log(f"pure loop, batch {batch}: does not fit ({row['kv_cache_gib']:.1f} GiB of cache)")
            return {**row, "fits": False}
        window_s[batch] = time.perf_counter() - tick
        row.update(fits=True, tokens_per_s=rate, first_sync_s=warmup, timed_steps=timed)
        if isinstance(rate_ref, float):
            row["ratio_to_reference_style"] = rate / rate_ref
        if "floor_tokens_per_s" in row:
            row["fraction_of_floor"] = rate / row["floor_tokens_per_s"]
        if cuda:
            row["peak_allocated_gib"] = torch.cuda.max_memory_allocated() / 2**30
        log(
            f"pure loop, batch {batch}: {rate:7.1f} tokens/s "
            + (
                f"({row['ratio_to_reference_style']:.1f}x reference-style) "
                if "ratio_to_reference_style" in row
                else ""
            )
            + (
                f"floor {row['floor_tokens_per_s']:.0f} ({100 * row['fraction_of_floor']:.0f}%), "
                if "fraction_of_floor" in row
                else ""
            )
            + f"first sync after {warmup:.1f}s, cache {row['kv_cache_gib']:.1f} GiB"
            + (f", peak {row['peak_allocated_gib']:.1f} GiB" if cuda else "")
        )
        return row

    for batch in args.batch:
        # estimate: the previous window scaled by the batch (attention and prefill grow with it)
        known = [(b, s) for b, s in window_s.items()]
        cost = max(s * batch / b for b, s in known) if known else 0.0
        stages.run(f"batch{batch}", lambda batch=batch: batch_run(batch), cost)

    # 7 (quantize=none, on this model), then 5 (the whole tile), then 7 for the quantised modes
    one = window_s.get(1)
    per_mode = (build_s + len(args.kv_cache) * one) if one is not None else None
    quantized = [m for m in args.quantize if m != "none"]
    if args.quantize:
        results["quantize"] = {}

    def quantize_stage(mode: str, cost: float) -> None:
        measured = model if mode == "none" else shape  # none: the model above, as it is
        stages.run(
            mode,
            lambda: quantized_run(
                mode,
                measured,
                small,
                args.device,
                dtype,
                prompt,
                vocab,
                sampling,
                args.steps,
                sync,
                args.kv_cache,
            ),
            cost,
            into=results["quantize"],
        )
        log(describe_quantized(mode, results["quantize"][mode]))

    if "none" in args.quantize:
        quantize_stage("none", len(args.kv_cache) * one if one is not None else 0.0)

    rate1 = results.get("batch1", {}).get("tokens_per_s")
    if not args.no_full_tile:

        def full_tile() -> dict:
            release_memory()
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            sync()
            start = time.perf_counter()
            out = generate(model, [prompt], vocab, sampling, cuda_graph=True)
            sync()
            row = {
                "seconds": time.perf_counter() - start,
                "tokens": len(out.ids[0]),
                "warmup_s": out.warmup_s,
            }
            row["peak_allocated_gib"] = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
            log(
                f"whole {size} px tile, batch 1: {row['seconds']:.1f}s for {row['tokens']} tokens "
                f"(warm-up {out.warmup_s:.1f}s), peak memory {row['peak_allocated_gib'] or 0:.1f} GiB"
            )
            return row

        expected = body / rate1 if rate1 else float("inf")
        reserve = len(quantized) * per_mode if per_mode is not None else 0.0  # keep time for stage 7
        if expected > args.full_budget:
            results["full_tile"] = {
                "skipped": f"batch 1 predicts {expected:.0f}s > --full-budget {args.full_budget:.0f}s"
            }
            log(f"full_tile: {results['full_tile']}")
        else:
            stages.run("full_tile", full_tile, expected + reserve)
    model = None  # freed before the quantised models are built (the stages above hold it in closures)
    release_memory()

    for mode in quantized:
        quantize_stage(mode, per_mode or 0.0)
    stages.save()
    log(f"done{f'; results in {args.json}' if args.json else ''}")
    if stages.failed:
        raise SystemExit(f"bench_7b: {len(stages.failed)} stage(s) failed: {', '.join(stages.failed)}")


def _checked(value) -> str:
    """How a graph-vs-eager result reads: None means no graph could be captured (CPU)."""
    return "not checked (no CUDA graphs on the CPU)" if value is None else str(value)


if __name__ == "__main__":
    main()
