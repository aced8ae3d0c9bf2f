"""Host memory that a step frees stays in the process for the next step (Linux, glibc).

XLA:CPU allocates each execution's temporary buffers (activations, gradients: ~1.9 GB for the
base model's pretraining step at batch 8) with ``malloc`` and frees them when the step ends.
glibc serves allocations this large with fresh ``mmap`` regions (or per-thread heaps) and
returns them to the kernel on ``free``, so every step page-faults all of that memory in again
and the kernel zeroes it: ~467,000 faults and ~0.8 CPU-seconds of kernel time per step there.
``keep_freed_memory`` makes glibc serve every allocation from the one main heap and keep what
is freed (up to ``KEPT_BYTES`` at its top), so the next step reuses the same pages.

The costs, why it is off by default (``--config.keep_freed_host_memory=True`` turns it on in
``launch.py``): memory freed at the top of the heap goes back to the operating system only
beyond ``KEPT_BYTES`` (the peak stays resident), and all threads then allocate from one arena,
which makes XLA's compiling ~25% slower (its compile threads allocate a lot) and would
serialise the allocations of a GPU host's input-pipeline threads. The one arena is needed:
a thread's own arena falls back to ``mmap`` for blocks this large whatever the settings.

Call it before JAX starts its threads (before the first ``jax.devices()`` or computation):
arenas that threads already created stay in use.
"""

from __future__ import annotations

import ctypes
import sys

# mallopt(3) parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
KEPT_BYTES = 2**31 - 1  # mallopt takes an int: the largest trim threshold it can set.
_applied = False


def applied() -> bool:
  """Whether ``keep_freed_memory`` has taken effect in this process."""
  return _applied


def keep_freed_memory() -> bool:
  """Sets glibc's malloc to one arena, no ``mmap`` allocations and a ``KEPT_BYTES`` trim
  threshold. Returns whether it applied (False off Linux or without glibc: nothing changes)."""
  if not sys.platform.startswith("linux"):
    return False
  try:
    libc = ctypes.CDLL("libc.so.6")
    libc.gnu_get_libc_version  # pylint: disable=pointless-statement (glibc, not musl)
  except (OSError, AttributeError):
    return False
  global _applied
  settings = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, KEPT_BYTES))
  _applied = all(libc.mallopt(param, value) == 1 for param, value in settings)
  return _applied
