#!/usr/bin/env bash
# Every GPU measurement of the project in one run, written to ONE JSON (sized to finish well inside 8
# minutes on an H100/H200 by estimate, not yet run on one;
# the stages are listed in benchmarks/bench_7b.py; stage 7, backbone.quantize none/int8/int4 at batch 1,
# each with the KV cache in bf16 and in int8 (restore.kv_cache),
# with peak memory, builds three more 7B models: about a minute more by estimate). Whoever has a GPU runs
# it as it stands:
#
#   benchmarks/gpu_check.sh [OUT_DIR]     # default: $OUT, else runs/gpu_check
#   benchmarks/gpu_check.sh --dry-run     # every stage on a tiny model on the CPU (checks the script)
#
# Needs the project's Python packages (pip install -e .); runs from the source tree without installing.
set -euo pipefail
cd "$(dirname "$0")/.."

dry=()
if [[ "${1:-}" == "--dry-run" ]]; then
    dry=(--dry-run)
    shift
fi
out="${1:-${OUT:-runs/gpu_check}}"
mkdir -p "$out"
export PYTHONPATH="$PWD:$PWD/benchmarks${PYTHONPATH:+:$PYTHONPATH}"
python -c "import torch, transformers, omegaconf, safetensors" 2>/dev/null || {
    echo "gpu_check: the project's packages are missing; run: pip install -e ." >&2
    exit 2
}
if [[ ${#dry[@]} -eq 0 ]]; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
python benchmarks/bench_7b.py "${dry[@]}" --json "$out/gpu_check.json" 2>&1 | tee "$out/gpu_check.log"
# Speculative decoding on the 7B (issue 17; about a minute more by estimate), added to the same JSON.
python benchmarks/bench_speculative.py --models 7b --repeats 1 "${dry[@]}" --json "$out/gpu_check.json" 2>&1 |
    tee -a "$out/gpu_check.log"
echo "gpu_check: results in $out/gpu_check.json"
