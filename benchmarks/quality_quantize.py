"""The quality guard of ``backbone.quantize`` and ``restore.kv_cache`` (:mod:`pure.quantize_quality`), on
the CPU.

The deterministic backbone of the reference fixtures (2 layers, hidden 64, PURE's 73,728-entry
vocabulary) in float32 is the reference; int8 and int4 are the same checkpoint loaded with
``quantize=int8|int4``, and bf16 (unquantised weights and activations in bfloat16) is printed as a
yardstick: the rounding every GPU run already has. Each is measured with the KV cache in the model's
dtype and with ``restore.kv_cache=int8`` (fp32 weights with an int8 cache isolate the cache's effect).
Also printed: the reference's median gap between its two largest logits, the scale against which top-1
agreement should be read.

    python benchmarks/quality_quantize.py                        # fixtures at ../shared/reference
    python benchmarks/quality_quantize.py --reference DIR --json quality.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
from pathlib import Path

import torch

from pure.model import load_backbone
from pure.quantize_quality import QualityGuard, load_fixture

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--reference", default=str(ROOT.parent / "shared" / "reference"), help="fixtures folder"
    )
    parser.add_argument("--json", help="also write the numbers here")
    args = parser.parse_args()
    fixture = load_fixture(args.reference, tempfile.mkdtemp(prefix="pure-quality-"))
    reference = load_backbone(str(fixture.folder), dtype=torch.float32)
    guard = QualityGuard(reference, fixture)
    with torch.inference_mode():
        top2 = reference(input_ids=fixture.ids[None]).logits[0].topk(2, dim=-1).values
    gap = float((top2[:, 0] - top2[:, 1]).median())
    print(
        f"reference: float32; median gap between its two largest logits: {gap:.4f} "
        f"over {len(fixture.ids)} positions"
    )
    print(
        "| weights | KV cache | top-1 agreement | mean KL (nats) | same candidate count | candidates kept |"
    )
    print("|---|---|---|---|---|---|")
    results: dict = {"median_top2_gap": gap}
    rows = [
        ("bf16", torch.bfloat16, "none"),
        ("int8", torch.float32, "int8"),
        ("int4", torch.float32, "int4"),
    ]
    for kv_cache in ("model", "int8"):
        for name, dtype, mode in ([("fp32", torch.float32, "none")] if kv_cache == "int8" else []) + rows:
            model = load_backbone(str(fixture.folder), dtype=dtype, quantize=mode)
            q = guard.measure(model, kv_cache)
            kv_name = "int8" if kv_cache == "int8" else f"model ({'bf16' if name == 'bf16' else 'fp32'})"
            results[f"{name} weights, kv_cache={kv_cache}"] = dataclasses.asdict(q)
            print(
                f"| {name} | {kv_name} | {q.top1_agreement:.3f} ({round(q.top1_agreement * q.positions)}/"
                f"{q.positions}) | {q.mean_kl:.2e} | {q.same_count_steps}/{q.steps} steps "
                f"| {q.candidate_overlap:.3f} |"
            )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
