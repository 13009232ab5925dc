#!/usr/bin/env bash
# The device check: LoRA / prefix / P-tuning v2 training tokens/s, 16 and 64 concurrent customers
# through `endcloud serve --device`, and batch-1 decode against the memory-bandwidth bound, on a
# Qwen2.5-0.5B-shaped model (random init, bf16). Budget: under 8 minutes on one GPU.
#
#   bench/device_check.sh                 # a GPU when torch sees one: the 0.5B shape, bf16
#   bench/device_check.sh --cpu           # the CPU-sized variant (a tiny model; what runs without a GPU)
#   OUT=dir bench/device_check.sh         # also writes dir/device_check.json
#
# Figures go to stdout as JSON (and to $OUT/device_check.json); progress lines to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT_DIR=${OUT:-}
args=()
if [[ "${1:-}" == "--cpu" ]] || ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "device_check: no GPU (or --cpu): the CPU-sized variant" >&2
  args=(--size tiny --device cpu --train-steps 6 --customers 16,64 --turns 1 --max-new-tokens 16 --decode-tokens 32)
else
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >&2 || true
  args=(--size 0.5b --device cuda --dtype bf16 --train-steps 20 --customers 16,64 --turns 2 --max-new-tokens 64 \
        --decode-tokens 128)
fi
if [[ -n "$OUT_DIR" ]]; then
  mkdir -p "$OUT_DIR"
  args+=(--out "$OUT_DIR/device_check.json")
fi
exec timeout 900 "$PY" bench/bench_device.py "${args[@]}"
