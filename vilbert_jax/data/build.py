"""Building the TFDS datasets of `tfds_builders/` from Python."""
from __future__ import annotations

from typing import Optional

from vilbert_jax.data import tfds_io


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
  # Imported here: the builders import vilbert_jax.data, which imports this module.
  from tfds_builders import build  # pylint: disable=import-outside-toplevel
  builder = build.make_builder(name, data_dir, config, skip_bad_rows, num_workers,
                                            **overrides)
  tfds_io.build(builder, manual_dir)
  return f"{builder.name}/{builder.builder_config.name}"


def build_synthetic(data_dir: str, **sizes) -> str:
  """Builds the synthetic scenes (no input files); returns at once if already built.

  Args:
    data_dir: TFDS data dir.
    sizes: any of feature_dim (128), num_classes (20, at most 20), num_train (5000),
      num_validation (500), num_test (500), min_regions (10), max_regions (36), noise (0.3,
      feature noise std relative to prototype scale 1), seed (0), float16 (False).

  Returns:
    the dataset name for `open_split` / `tfds.data_source`. The defaults take about 10 s on
    2 CPU cores; values other than the defaults get their own config folder.
  """
  return build_dataset("vilbert_synthetic_scenes", data_dir, **sizes)
