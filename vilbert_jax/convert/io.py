"""Reading and writing state dicts (``{key: np.ndarray}``) without running code from files."""

from __future__ import annotations

import os
import pathlib
from typing import Mapping

import numpy as np

StateDict = dict[str, np.ndarray]

_WRAPPERS = ("state_dict", "model", "model_state_dict")  # Common nesting in torch checkpoints.


def _strip_module_prefix(state_dict: Mapping[str, np.ndarray]) -> StateDict:
  """Removes the ``module.`` prefix that DataParallel/DistributedDataParallel add."""
  if state_dict and all(k.startswith("module.") for k in state_dict):
    return {k[len("module."):]: v for k, v in state_dict.items()}
  return dict(state_dict)


def _load_torch(path: pathlib.Path) -> StateDict:
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
        f"reading {path} needs PyTorch (pip install torch); .npz and .safetensors "
        "checkpoints do not") from e
  # weights_only=True: a checkpoint can hold tensors and plain containers, never code.
  obj = torch.load(path, map_location="cpu", weights_only=True)
  for wrapper in _WRAPPERS:
    if isinstance(obj, Mapping) and wrapper in obj and isinstance(obj[wrapper], Mapping):
      obj = obj[wrapper]
  if not isinstance(obj, Mapping):
    raise ValueError(f"{path}: expected a state dict (mapping of tensors), got {type(obj)}")
  return {k: v.detach().float().numpy() if v.is_floating_point() else v.numpy()
          for k, v in obj.items() if hasattr(v, "numpy")}


def load_state_dict(path: str | os.PathLike) -> StateDict:
  """Loads a checkpoint as ``{original key: np.ndarray}``.

  Formats by extension: ``.npz`` (keys, or ``param/<key>`` as in the reference files),
  ``.safetensors``, and torch ``.bin``/``.pth``/``.pt`` (needs torch, loaded with
  ``weights_only=True``). A ``module.`` prefix on every key is removed.
  """
  path = pathlib.Path(path)
  if not path.exists():
    raise FileNotFoundError(f"checkpoint not found: {path}")
  suffix = path.suffix.lower()
  if suffix == ".npz":
    with np.load(path, allow_pickle=False) as z:
      keys = z.files
      if any(k.startswith("param/") for k in keys):
        state = {k[len("param/"):]: z[k] for k in keys if k.startswith("param/")}
      else:
        state = {k: z[k] for k in keys}
  elif suffix == ".safetensors":
    from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
    state = load_file(str(path))
  elif suffix in (".bin", ".pth", ".pt"):
    state = _load_torch(path)
  else:
    raise ValueError(f"{path}: unknown checkpoint format {suffix!r}; expected .npz, "
                     ".safetensors, .bin, .pth or .pt")
  return _strip_module_prefix(state)


def save_state_dict(state_dict: Mapping[str, np.ndarray], path: str | os.PathLike) -> None:
  """Writes ``.npz`` or ``.safetensors`` (by extension)."""
  path = pathlib.Path(path)
  arrays = {k: np.ascontiguousarray(v) for k, v in state_dict.items()}
  if path.suffix == ".npz":
    np.savez(path, **arrays)
  elif path.suffix == ".safetensors":
    from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
    save_file(arrays, str(path))
  else:
    raise ValueError(f"{path}: can write .npz or .safetensors, not {path.suffix!r}")
