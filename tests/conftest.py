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
