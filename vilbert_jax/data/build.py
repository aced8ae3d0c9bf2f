"""Building the TFDS datasets of `tfds_builders/` from Python."""
from __future__ import annotations

import importlib
import os
import sys
from typing import Optional

from vilbert_jax.data import tfds_io

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _builders_module():
  """`tfds_builders.build`, importable from the repository root even when not on sys.path."""
  try:
    return importlib.import_module("tfds_builders.build")
  except ModuleNotFoundError:
    sys.path.insert(0, _REPO_ROOT)
    return importlib.import_module("tfds_builders.build")


def build_dataset(name: str, data_dir: str, manual_dir: Optional[str] = None,
                  config: Optional[str] = None, skip_bad_rows: bool = False,
                  num_workers: int = 0, **overrides) -> str:
  """Builds dataset `name` (e.g. "vilbert_vqa2") under `data_dir`; quick if already built.

  Args:
    manual_dir: the folder holding the source files (layouts in vilbert_jax/data/README.md).
    config: a named builder config; None = the builder's default.
    skip_bad_rows: skip (and record in metadata) images whose features are bad or missing,
      instead of stopping at the first.
    num_workers: processes decoding feature records (0 = this process; not for synthetic).
    overrides: config fields to change, e.g. feature_dim=64, float16=True.

  Returns:
    the name to open the dataset with, "<builder>/<config>" (`open_split`, `tfds.data_source`).
  """
  builder = _builders_module().make_builder(name, data_dir, config, skip_bad_rows, num_workers,
                                            **overrides)
  tfds_io.build(builder, manual_dir)
  return f"{builder.name}/{builder.builder_config.name}"


def build_synthetic(data_dir: str, *, feature_dim: int = 128, num_classes: int = 20,
                    num_train: int = 5000, num_validation: int = 500, num_test: int = 500,
                    seed: int = 0, float16: bool = False) -> str:
  """Builds the synthetic scenes (no input files); returns at once if already built.

  The defaults take about 10 s on 2 CPU cores. Returns the dataset name for `open_split`.
  """
  defaults = dict(feature_dim=128, num_classes=20, num_train=5000, num_validation=500,
                  num_test=500, seed=0, float16=False)
  given = dict(feature_dim=feature_dim, num_classes=num_classes, num_train=num_train,
               num_validation=num_validation, num_test=num_test, seed=seed, float16=float16)
  overrides = {k: v for k, v in given.items() if v != defaults[k]}
  return build_dataset("vilbert_synthetic_scenes", data_dir, **overrides)
