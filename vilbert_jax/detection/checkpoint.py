"""A converted detector on disk: Orbax params plus the DetectorConfig that built them.

Layout of ``DIR`` (written by ``python -m vilbert_jax.convert frcnn``)::

    DIR/params/        Orbax checkpoint of the FasterRCNN params tree (float32)
    DIR/detector.json  {"config": DetectorConfig fields}
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from typing import Any

import flax
import orbax.checkpoint as ocp

from vilbert_jax.detection.config import DetectorConfig

SPEC_FILE = "detector.json"


def save_detector(directory: str | os.PathLike, params: Any,
                  cfg: DetectorConfig) -> pathlib.Path:
  """Writes `params` and `cfg` to `directory` (must not exist or be empty)."""
  directory = pathlib.Path(directory).absolute()
  if directory.exists() and any(directory.iterdir()):
    raise FileExistsError(f"{directory} exists and is not empty; choose a new directory")
  directory.mkdir(parents=True, exist_ok=True)
  with ocp.StandardCheckpointer() as ckpt:
    ckpt.save(directory / "params", flax.core.unfreeze(params))
  (directory / SPEC_FILE).write_text(json.dumps({"config": dataclasses.asdict(cfg)}, indent=2))
  return directory


def load_detector(directory: str | os.PathLike) -> tuple[Any, DetectorConfig]:
  """Reads what ``save_detector`` wrote: ``(params as numpy arrays, cfg)``."""
  directory = pathlib.Path(directory).absolute()
  spec = directory / SPEC_FILE
  if not spec.exists():
    raise FileNotFoundError(f"{spec} not found: {directory} is not a detector params "
                            "directory (write one with python -m vilbert_jax.convert frcnn)")
  fields = json.loads(spec.read_text())["config"]
  cfg = DetectorConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})
  with ocp.StandardCheckpointer() as ckpt:
    params = ckpt.restore(directory / "params")
  return params, cfg
