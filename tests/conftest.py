"""Test-wide set-up: 8 host devices for sharding tests, float32 matmuls on CPU."""
import os

# Must happen before JAX is imported anywhere. pytest-xdist workers inherit the controller's
# environment and load this file again: the flag is then present once, not appended twice.
_DEVICES = "--xla_force_host_platform_device_count=8"
os.environ["XLA_FLAGS"] = " ".join(
    [f for f in os.environ.get("XLA_FLAGS", "").split() if f != _DEVICES] + [_DEVICES])
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Compiled programs are reused across the tests' subprocesses and repeated runs.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", "/tmp/vilbert_jax_test_compilation_cache")

import pathlib  # noqa: E402

import pytest  # noqa: E402

FIXTURES = pathlib.Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def fixtures_dir() -> pathlib.Path:
  return FIXTURES


# Run first (scripts/test.sh: pytest-xdist, --dist loadfile --no-loadscope-reorder): the
# modules that take longest (`--durations`), so that no long module starts last while the
# other process has nothing left to do. The others follow in their usual order.
_LONGEST_FIRST = ("test_train.py", "test_tasks.py", "test_train_faults.py", "test_multitask.py",
                  "test_documented_commands.py", "test_model.py", "test_fast_paths.py")


def pytest_collection_modifyitems(items):
  rank = {name: i for i, name in enumerate(_LONGEST_FIRST)}
  items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable within a module
