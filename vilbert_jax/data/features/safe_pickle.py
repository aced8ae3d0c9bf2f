"""A pickle reader that admits numpy arrays and plain values only.

The original ViLBERT LMDB stores hold pickled dicts. An ordinary `pickle.loads` would run any
callable a file names; this unpickler resolves only the few globals numpy needs to rebuild
arrays and scalars, so a data file can never run code.
"""
from __future__ import annotations

import io
import pickle

# (module, name) pairs a pickled ndarray, numpy scalar or dtype refers to.
_ALLOWED = frozenset({
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("builtins", "bytearray"),
    ("_codecs", "encode"),
})


class UnsafePickleError(pickle.UnpicklingError):
  """A pickle asked for something other than arrays and plain values."""


class _RestrictedUnpickler(pickle.Unpickler):

  def find_class(self, module: str, name: str):
    if (module, name) not in _ALLOWED:
      raise UnsafePickleError(
          f"refusing to load {module}.{name}: feature records may hold only numpy arrays and "
          "plain values")
    return super().find_class(module, name)


def safe_loads(data: bytes):
  """Unpickles `data`, admitting only numpy arrays, numpy scalars and builtin values.

  Raises:
    UnsafePickleError: if the pickle references any other global (e.g. `os.system`).
  """
  return _RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
