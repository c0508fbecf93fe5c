#!/usr/bin/env bash
# The GPU check, for a session lent a CUDA machine: one prepared script, under
# 8 minutes on one H100. From the repo root, with a Python that has carp's
# dependencies and a CUDA torch (PY, default python3):
#
#   benchmarks/gpu_check.sh [OUT_DIR]
#
# 1. the CUDA tests (tests/gpu: evaluation, Wanda/SparseGPT masks and PASER on
#    CUDA against the CPU, bf16/fp16 evaluation);
# 2. benchmarks/recover_gpu_zero2.py (recover under DeepSpeed ZeRO-2 bf16 vs
#    a bare bf16 loop, ratio);
# 3. benchmarks/evaluate_throughput.py on the GPU (carp vs lm-eval's HF
#    backend and a bare HF loop, ratios with intervals);
# 4. the real-use preset (pipelines/presets/local-hf.yaml) on a generated tiny
#    checkpoint and data files, `carp run` with device auto.
# Prints one markdown table (step | status | seconds | figure) for the note and
# writes it to OUT_DIR/gpu_check.md with every step's log beside it.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
OUT=${1:-benchmarks/results/gpu_check}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
export DVC_NO_ANALYTICS=1 TOKENIZERS_PARALLELISM=false
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_check: no CUDA device visible to $PY; run this on a GPU machine" >&2
  exit 2
fi
rows=()
step() {  # step NAME TIMEOUT_S FIGURE_GREP -- command...
  local name=$1 limit=$2 grep_for=$3; shift 4
  local log="$OUT/$name.log" t0=$SECONDS status=ok
  timeout "$limit" "$@" >"$log" 2>&1 || status="FAILED ($?)"
  local figure
  figure=$(grep -E "$grep_for" "$log" | tail -n 3 | tr '\n' ' ' | tr '|' '/' | cut -c1-220)
  rows+=("| $name | $status | $((SECONDS - t0)) | ${figure:-see $log} |")
}
"$PY" -c "import torch; print(torch.cuda.get_device_name(0), torch.__version__)" >"$OUT/device.txt"
step cuda_tests 180 "passed|failed|error" -- \
  "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/gpu
step recover_zero2 150 "ratio|tokens/s" -- "$PY" benchmarks/recover_gpu_zero2.py
step evaluate_throughput 120 "vs|same number" -- \
  "$PY" benchmarks/evaluate_throughput.py --hidden 1024 --layers 8 --docs 96 \
  --seqlen 1024 --batch-size 16 --rounds 3
step local_hf_preset 150 "passed|failed|error" -- \
  "$PY" -m pytest -q -p no:cacheprovider -m "slow or not slow" \
  tests/integration/test_local_hf.py::test_preset_runs_under_carp_run
{
  echo "# GPU check on $(cat "$OUT/device.txt")"
  echo
  echo "| step | status | seconds | figure |"
  echo "|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
} | tee "$OUT/gpu_check.md"
