"""`host_memory.keep_freed_memory`: a repeated computation stops page-faulting its buffers."""
import json
import subprocess
import sys

import pytest

# Runs a jitted computation with two 64 MiB intermediates 20 times and prints the minor page
# faults of the last 12 runs; argv[1] == "keep" first applies keep_freed_memory.
_PROGRAM = """
import json, resource, sys
from vilbert_jax.train import host_memory
applied = host_memory.keep_freed_memory() if sys.argv[1] == "keep" else False
import jax, jax.numpy as jnp

@jax.jit
def f(a):
  y = jnp.cumsum(a, axis=0)
  return (jnp.cumsum(y * y, axis=1) * y).sum()

a = jnp.ones((4096, 4096))
for _ in range(8):  # while the heap's layout settles, it may still grow
  f(a).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(12):
  f(a).block_until_ready()
print(json.dumps({"applied": applied, "host_memory_applied": host_memory.applied(),
                  "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def _faults(mode: str) -> dict:
  out = subprocess.run([sys.executable, "-c", _PROGRAM, mode], capture_output=True, text=True,
                       check=True, timeout=120)
  return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings")
def test_kept_memory_is_reused_instead_of_faulted_in_again():
  default, kept = _faults("default"), _faults("keep")
  pages = 2 * 4096 * 4096 * 4 // 4096  # the two intermediates, in 4 KiB pages
  assert not default["host_memory_applied"] and kept["applied"] and kept["host_memory_applied"]
  # glibc's default gives the intermediates back to the kernel after each run: they fault in.
  assert default["faults"] > 12 * pages // 2, default
  # Kept: reused. (On busy cores the heap may still grow a few times, by a run's worth, before
  # its layout settles and the resident set plateaus: 0-4 runs' worth seen in 12.)
  assert kept["faults"] < default["faults"] // 2, (kept, default)
