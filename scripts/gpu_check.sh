#!/usr/bin/env bash
# bfloat16 numerics and train-step benchmarks in one call (see scripts/gpu_check.py).
# Usage: bash scripts/gpu_check.sh [--smoke]
#        bash scripts/gpu_check.sh --detector [--smoke]   # region feature extractor speed
#          (full size, batch 32, bfloat16 then float32; see scripts/benchmark_detector.py)
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" == "--detector" ]]; then
  shift
  batch=32
  if [[ "${1:-}" == "--smoke" ]]; then batch=2; fi
  for dtype in bfloat16 float32; do
    PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" python scripts/benchmark_detector.py \
        --batch "$batch" --dtype "$dtype" "$@"
  done
  exit 0
fi
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" exec python scripts/gpu_check.py "$@"
