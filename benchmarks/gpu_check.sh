#!/usr/bin/env bash
# The prepared GPU check: on a CUDA machine, run the CUDA tests and the training, evaluation
# and extraction benchmarks in under 10 minutes, and write every figure to one file.
#
#   bash benchmarks/gpu_check.sh [OUT_FILE]        # default: gpu_check.txt
#   DEVICE=cpu QUICK=1 bash benchmarks/gpu_check.sh /tmp/dry.txt   # a dry run of the script
#
# Needs radiopath with its dev extra and a CUDA build of torch (installed by the user; CI never
# runs this). Each step has its own time limit, so one slow or failing step cannot eat the
# others' time; the file says which step failed and why.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-gpu_check.txt}
DEVICE=${DEVICE:-cuda}
if [ "${QUICK:-0}" = "1" ]; then
    TRAIN="--patients 20 --min-nodes 200 --max-nodes 1000 --dim 64 --epochs 1"
    EVAL="--patients 60 --dim 32 --folds 2 --aggregators sparra"
    EXTRACT="--slide-size 1024 --ct-shape 64 64 32"
else
    TRAIN="--patients 205 --epochs 2"
    EVAL=""
    EXTRACT=""
fi

step() {  # step NAME LIMIT_S COMMAND...
    local name=$1 limit=$2
    shift 2
    echo
    echo "## $name (limit ${limit}s): $*"
    local start=$SECONDS
    timeout "$limit" "$@"
    local rc=$?
    echo "-- $name: exit $rc after $((SECONDS - start)) s"
}

{
    echo "# radiopath GPU check, $(date -u +%Y-%m-%dT%H:%M:%SZ), device $DEVICE"
    python - <<'PY'
import platform, torch, radiopath
print("radiopath", radiopath.__version__, "| torch", torch.__version__, "| CUDA", torch.version.cuda,
      "| available", torch.cuda.is_available(), "|", platform.platform())
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f"GPU {i}: {p.name}, {p.total_memory / 2**30:.0f} GiB")
PY
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
    step "CUDA tests" 150 python -m pytest -q -p no:warnings -rs tests -k cuda
    step "training throughput" 240 python benchmarks/bench_training.py --aggregators sparra,mean --device "$DEVICE" $TRAIN
    step "evaluation, torch backend" 150 python benchmarks/bench_evaluation.py --backends torch --device "$DEVICE" $EVAL
    step "extraction" 90 python benchmarks/bench_extract.py --device "$DEVICE" $EXTRACT
} 2>&1 | grep -v "Warning\|warnings.warn" | tee "$OUT"
