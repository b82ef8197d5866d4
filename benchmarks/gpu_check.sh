#!/usr/bin/env bash
# Every GPU measurement of the project in one run, written to ONE JSON (by estimate 5-6 minutes on an
# H200; not yet run on one). The stages are listed in benchmarks/bench_7b.py; then speculative decoding
# (benchmarks/bench_speculative.py, issue 17) is added to the same JSON.
#
#   benchmarks/gpu_check.sh [OUT_DIR]        # default: $OUT, else runs/gpu_check
#   benchmarks/gpu_check.sh --dry-run [DIR]  # every stage on a tiny model on the CPU (checks the script)
#   benchmarks/gpu_check.sh --fetch-wheels   # here, with pip access: the packages the GPU machine lacks
#
# Time: bench_7b.py stops starting stages at GPU_CHECK_DEADLINE seconds (default 330) and the speculative
# run is cut at GPU_CHECK_TOTAL seconds (default 450) from the start, so the run ends inside 8 minutes
# with what it measured. The JSON is rewritten after every stage and the log is unbuffered, so a run that
# is killed keeps its results; one failing stage or script does not stop the others (the exit status
# says whether any failed).
#
# Packages: the project's (pip install -e .). A machine that cannot install them (the lent H200 has
# torch and transformers, but not omegaconf or torchao) gets wheels: run --fetch-wheels where pip works,
# carry .whl/ (git-ignored) with the tree, and this script installs them into a temporary folder first.
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-$(command -v python3 || command -v python)}"
WHEELS=(omegaconf torchao)  # not on the H200 image (see the README); their own needs are there

if [[ "${1:-}" == "--fetch-wheels" ]]; then
    # The versions installed here, as wheels for the GPU machine's Python 3.12 on x86-64 Linux.
    specs=()
    for name in "${WHEELS[@]}"; do
        version=$("$PY" -c "from importlib.metadata import version; print(version('$name'))") || exit 2
        specs+=("$name==$version")
    done
    "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d .whl "${specs[@]}" || exit 2
    echo "gpu_check: wheels in .whl/ (${specs[*]}); carry .whl with the tree to the GPU machine"
    exit 0
fi

dry=()
if [[ "${1:-}" == "--dry-run" ]]; then
    dry=(--dry-run)
    shift
fi
out="${1:-${OUT:-runs/gpu_check}}"
mkdir -p "$out" || exit 2
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD:$PWD/benchmarks${PYTHONPATH:+:$PYTHONPATH}"
# torchao's compiled extensions are not used (int8 and int4 run on PyTorch's own kernels); not loading
# them avoids a mismatch with the machine's torch build.
export TORCHAO_FORCE_SKIP_LOADING_SO_FILES="${TORCHAO_FORCE_SKIP_LOADING_SO_FILES:-1}"

check="import omegaconf, safetensors, transformers, torchao, torch"  # the quick ones first
if ! "$PY" -c "$check" 2>/dev/null && compgen -G ".whl/*.whl" >/dev/null; then
    site="$(mktemp -d)"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" .whl/*.whl || exit 2
    export PYTHONPATH="$PYTHONPATH:$site"
    echo "gpu_check: installed $(ls .whl | tr '\n' ' ')into $site"
fi
if ! error=$("$PY" -c "$check" 2>&1); then
    echo "gpu_check: a package is missing: ${error##*$'\n'}" >&2
    echo "  install the project (pip install -e .), or where pip cannot reach a registry run" >&2
    echo "  'benchmarks/gpu_check.sh --fetch-wheels' on a machine that can and bring .whl/ along" >&2
    exit 2
fi
if [[ ${#dry[@]} -eq 0 ]]; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
fi

start=$SECONDS
total="${GPU_CHECK_TOTAL:-450}"
limits=(--deadline "${GPU_CHECK_DEADLINE:-330}")
if [[ ${#dry[@]} -gt 0 ]]; then  # the dry run checks every stage, however slow the CPU
    limits=()
    total=100000
fi
"$PY" benchmarks/bench_7b.py "${dry[@]}" "${limits[@]}" --json "$out/gpu_check.json" 2>&1 |
    tee "$out/gpu_check.log"
status7b=${PIPESTATUS[0]}
left=$((total - (SECONDS - start)))
if ((left > 30)); then
    timeout --signal=INT --kill-after=10 "$left" \
        "$PY" benchmarks/bench_speculative.py --models 7b --repeats 1 "${dry[@]}" --json "$out/gpu_check.json" \
        2>&1 | tee -a "$out/gpu_check.log"
    status_spec=${PIPESTATUS[0]}
else
    echo "gpu_check: no time left for speculative decoding (${left}s)" | tee -a "$out/gpu_check.log"
    status_spec=1
fi
echo "gpu_check: results in $out/gpu_check.json after $((SECONDS - start))s" \
    "(bench_7b exit $status7b, bench_speculative exit $status_spec)"
((status7b == 0 && status_spec == 0))
