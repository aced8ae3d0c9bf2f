#!/usr/bin/env bash
# bfloat16 numerics and train-step benchmarks in one call (see scripts/gpu_check.py).
# Usage: bash scripts/gpu_check.sh [--smoke]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" exec python scripts/gpu_check.py "$@"
