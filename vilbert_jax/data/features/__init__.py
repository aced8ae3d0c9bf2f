"""Region-feature stores: one reader interface over TSV, LMDB and per-image `.npz`/`.npy`.

`open_feature_store(path)` picks the reader from what is at `path`; every store supports
`store[image_id] -> RegionFeatures`, `store.raw(image_id) -> RawRecord` (bytes to decode
elsewhere), `keys()`, `len()`, `in` and iteration in file order.
"""
from __future__ import annotations

import glob
import os
from typing import Optional, Union

from vilbert_jax.data.features.lmdb_store import LmdbFeatureStore
from vilbert_jax.data.features.npy_dir import NpyDirFeatureStore
from vilbert_jax.data.features.record import (FeatureStoreError, RawRecord, RegionFeatures,
                                               make_record)
from vilbert_jax.data.features.safe_pickle import UnsafePickleError, safe_loads
from vilbert_jax.data.features.tsv import TsvFeatureStore, encode_tsv_line, parse_tsv_line

FeatureStore = Union[TsvFeatureStore, LmdbFeatureStore, NpyDirFeatureStore]


def open_feature_store(path: str, feature_dim: Optional[int] = None) -> FeatureStore:
  """Opens the feature store at `path`, detecting its format.

  Args:
    path: a `.tsv` file, a folder of `.tsv` files, an LMDB folder (holding `data.mdb`) or
      file (`*.lmdb`/`*.mdb`), or a folder of per-image `.npz`/`.npy` files.
    feature_dim: the expected region feature width; records of another width are errors.

  Raises:
    FileNotFoundError: if nothing is at `path`.
    FeatureStoreError: if the format cannot be recognised.
  """
  if not os.path.exists(path):
    raise FileNotFoundError(f"feature store {path} does not exist")
  if os.path.isfile(path):
    if path.endswith(".tsv"):
      return TsvFeatureStore([path], feature_dim)
    if path.endswith((".lmdb", ".mdb")):
      return LmdbFeatureStore(path, feature_dim)
    raise FeatureStoreError(f"{path}: unknown feature file type (expected .tsv or .lmdb)")
  if os.path.exists(os.path.join(path, "data.mdb")):
    return LmdbFeatureStore(path, feature_dim)
  tsvs = sorted(glob.glob(os.path.join(path, "*.tsv")))
  if tsvs:
    return TsvFeatureStore(tsvs, feature_dim)
  if any(n.endswith((".npz", ".npy")) for n in os.listdir(path)):
    return NpyDirFeatureStore(path, feature_dim)
  raise FeatureStoreError(
      f"{path}: no data.mdb, *.tsv, *.npz or *.npy inside; cannot tell the feature format")


__all__ = [
    "FeatureStore", "FeatureStoreError", "LmdbFeatureStore", "NpyDirFeatureStore", "RawRecord",
    "RegionFeatures", "TsvFeatureStore", "UnsafePickleError", "encode_tsv_line",
    "make_record", "open_feature_store", "parse_tsv_line", "safe_loads",
]
