"""Package attributes imported on first use (PEP 562), so that importing one submodule (e.g. a
dataset build's, or a Beam worker's) does not import the whole package with JAX and grain."""
from __future__ import annotations

import importlib
import importlib.util
from typing import Callable, Dict, List, Tuple


def attributes(package: str, names: Dict[str, str]) -> Tuple[Callable, Callable]:
  """`__getattr__` and `__dir__` for `package`.

  Args:
    package: the package's name, e.g. "vilbert_jax".
    names: attribute -> the submodule (relative to `package`) that defines it. Any other
      attribute that names a submodule imports it, as an eager `__init__` would have bound it.
  """
  def __getattr__(name: str):
    if name in names:
      value = getattr(importlib.import_module(f"{package}.{names[name]}"), name)
    elif not name.startswith("__") and importlib.util.find_spec(f"{package}.{name}"):
      value = importlib.import_module(f"{package}.{name}")
    else:
      raise AttributeError(f"module {package!r} has no attribute {name!r}")
    setattr(importlib.import_module(package), name, value)
    return value

  def __dir__() -> List[str]:
    bound = vars(importlib.import_module(package))
    return sorted(set(bound) | set(names) | set(bound.get("__all__", ())))

  return __getattr__, __dir__
