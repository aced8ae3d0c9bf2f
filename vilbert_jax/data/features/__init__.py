"""Region-feature stores: one reader interface over TSV, LMDB and per-image `.npz`/`.npy`.

`open_feature_store(path)` picks the reader from what is at `path`; every store supports
`store[image_id] -> RegionFeatures`, `store.raw(image_id) -> RawRecord` (bytes to decode
elsewhere), `keys()`, `len()`, `in` and iteration in file order.
"""
from __future__ import annotations

import glob
import os
from typing import Optional, Union

from vilbert_jax.data.features.lmdb_store import LmdbFeatureStore, LmdbFeatureWriter, lmdb_ids
from vilbert_jax.data.features.npy_dir import NpyDirFeatureStore, NpzDirFeatureWriter
from vilbert_jax.data.features.record import (FeatureStoreError, RawRecord, RegionFeatures,
                                               make_record)
from vilbert_jax.data.features.safe_pickle import UnsafePickleError, safe_loads
from vilbert_jax.data.features.tsv import (TsvFeatureStore, TsvFeatureWriter, complete_tsv_ids,
                                           encode_tsv_line, parse_tsv_line)

FeatureStore = Union[TsvFeatureStore, LmdbFeatureStore, NpyDirFeatureStore]
FeatureWriter = Union[TsvFeatureWriter, LmdbFeatureWriter, NpzDirFeatureWriter]


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


def writer_format(path: str) -> str:
  """The store format written at `path`: "tsv" (`*.tsv`), "lmdb" (`*.lmdb`: a folder holding
  data.mdb, as the originals ship) or "npz" (any other path: a folder of `<image_id>.npz`).

  Raises:
    FeatureStoreError: if `path` is an existing file, or an existing folder holding another
      store, that the chosen writer would not extend.
  """
  path = path.rstrip("/")
  fmt = "tsv" if path.endswith(".tsv") else "lmdb" if path.endswith(".lmdb") else "npz"
  if fmt == "tsv" and os.path.isdir(path):
    raise FeatureStoreError(f"{path} is a folder; a TSV output must be a file")
  if fmt != "tsv" and os.path.isfile(path):
    raise FeatureStoreError(f"{path} is a file; LMDB and .npz outputs are folders "
                            "(name a TSV output *.tsv)")
  if fmt == "npz" and os.path.isdir(path) and (
      os.path.exists(os.path.join(path, "data.mdb")) or glob.glob(os.path.join(path, "*.tsv"))):
    raise FeatureStoreError(f"{path} holds an LMDB or TSV store, not per-image .npz files "
                            "(name the output *.lmdb or *.tsv)")
  return fmt


def open_feature_writer(path: str) -> FeatureWriter:
  """Opens a store for appending records (`writer_format` says which); whatever is already
  there is kept, and `writer.done_ids` lists its images. Every writer has `write(records)`
  (durable on return) and `close()`, and is a context manager."""
  fmt = writer_format(path)
  path = path.rstrip("/")
  return {"tsv": TsvFeatureWriter, "lmdb": LmdbFeatureWriter, "npz": NpzDirFeatureWriter}[fmt](
      path)


def written_ids(path: str) -> set:
  """Ids of the complete records of the store a writer would extend at `path` (empty if
  nothing is there), read without changing anything."""
  fmt = writer_format(path)
  path = path.rstrip("/")
  if not os.path.exists(path):
    return set()
  if fmt == "tsv":
    return set(complete_tsv_ids(path))
  if fmt == "lmdb":
    return set(lmdb_ids(path))
  return set(NpyDirFeatureStore(path).keys())


__all__ = [
    "FeatureStore", "FeatureStoreError", "FeatureWriter", "LmdbFeatureStore",
    "LmdbFeatureWriter", "NpyDirFeatureStore", "NpzDirFeatureWriter", "RawRecord",
    "RegionFeatures", "TsvFeatureStore", "TsvFeatureWriter", "UnsafePickleError",
    "encode_tsv_line", "make_record", "open_feature_store", "open_feature_writer",
    "parse_tsv_line", "safe_loads", "writer_format", "written_ids",
]
