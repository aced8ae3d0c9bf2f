"""Folders of per-image `.npz` (or `.npy` dict) files, named `<image_id>.npz`.

Each file holds arrays `features [N,D]`, `boxes [N,4]`, scalars `image_w`, `image_h` and
optionally `cls_prob [N,C]`. A `.npy` file holds those fields as one saved dict
(`np.save(path, {...})`); its pickled payload is read with the restricted unpickler.
"""
from __future__ import annotations

import io
import os
from typing import Iterator, List, Optional

import numpy as np

from vilbert_jax.data.features.record import (FeatureStoreError, RawRecord, RegionFeatures,
                                               duplicate_id_error, make_record)
from vilbert_jax.data.features.safe_pickle import UnsafePickleError, safe_loads

_SUFFIXES = (".npz", ".npy")


def _load_npy_dict(name: str, f: io.BytesIO) -> dict:
  """Reads a `.npy` holding one pickled dict, without running any code it names."""
  major, _ = np.lib.format.read_magic(f)
  read_header = (np.lib.format.read_array_header_1_0 if major == 1
                 else np.lib.format.read_array_header_2_0)
  _, _, dtype = read_header(f)
  if dtype != object:
    raise FeatureStoreError(f"{name}: holds a plain {dtype} array, not a dict of fields")
  try:
    value = safe_loads(f.read())
  except UnsafePickleError as e:
    raise FeatureStoreError(f"{name}: {e}") from e
  value = value.item() if isinstance(value, np.ndarray) else value
  if not isinstance(value, dict):
    raise FeatureStoreError(f"{name}: holds a {type(value).__name__}, not a dict of fields")
  return value


def decode_file(name: str, payload: bytes, feature_dim: Optional[int]) -> RegionFeatures:
  """Decodes the bytes of `<image_id>.npz` / `<image_id>.npy` into a checked record."""
  f = io.BytesIO(payload)
  data = _load_npy_dict(name, f) if name.endswith(".npy") else np.load(f, allow_pickle=False)
  fields = list(data.keys())
  missing = [k for k in ("features", "boxes", "image_w", "image_h") if k not in fields]
  if missing:
    raise FeatureStoreError(f"{name}: lacks arrays {missing}")
  features = data["features"]
  return make_record(name, os.path.splitext(name)[0], data["image_w"], data["image_h"],
                     len(features), data["boxes"], features,
                     data["cls_prob"] if "cls_prob" in fields else None, feature_dim)


class NpyDirFeatureStore:
  """Random access and iteration over a folder of per-image `.npz`/`.npy` files."""

  def __init__(self, path: str, feature_dim: Optional[int] = None):
    self.path = path
    self.feature_dim = feature_dim
    names = sorted(n for n in os.listdir(path) if n.endswith(_SUFFIXES))
    self._files = {}
    for name in names:
      image_id = os.path.splitext(name)[0]
      if image_id in self._files:
        raise duplicate_id_error(image_id, self._files[image_id], name)
      self._files[image_id] = name

  def keys(self) -> List[str]:
    return list(self._files)

  def __len__(self) -> int:
    return len(self._files)

  def __contains__(self, image_id) -> bool:
    return str(image_id) in self._files

  def raw(self, image_id) -> RawRecord:
    """The undecoded file of `image_id` (raises KeyError naming the folder if absent)."""
    name = self._files.get(str(image_id))
    if name is None:
      raise KeyError(f"image_id {image_id} is not in {self.path} (no {image_id}.npz)")
    with open(os.path.join(self.path, name), "rb") as f:
      return RawRecord(decode_file, name, f.read(), self.feature_dim)

  def __getitem__(self, image_id) -> RegionFeatures:
    return self.raw(image_id)()

  def __iter__(self) -> Iterator[RegionFeatures]:
    for image_id in self._files:
      yield self[image_id]


_PARTIAL = ".partial"  # Suffix of a file being written; renamed to <image_id>.npz when done.


def encode_npz(record: RegionFeatures) -> bytes:
  """The bytes of `<image_id>.npz` for `record`; the inverse of `decode_file`."""
  arrays = {"features": record.features, "boxes": record.boxes,
            "image_w": np.int64(record.image_w), "image_h": np.int64(record.image_h)}
  if record.cls_prob is not None:
    arrays["cls_prob"] = record.cls_prob
  f = io.BytesIO()
  np.savez(f, **arrays)
  return f.getvalue()


class NpzDirFeatureWriter:
  """Writes one `<image_id>.npz` per record into a folder; each file appears complete or not
  at all (written under a temporary name, then renamed), so a killed run leaves only whole
  files. Opening removes leftover temporary files."""

  def __init__(self, path: str):
    self.path = path
    os.makedirs(path, exist_ok=True)
    names = os.listdir(path)
    for name in names:
      if name.endswith(_PARTIAL):
        os.remove(os.path.join(path, name))
    self.done_ids = {os.path.splitext(n)[0] for n in names if n.endswith(_SUFFIXES)}

  def write(self, records: List[RegionFeatures]) -> None:
    for record in records:
      final = os.path.join(self.path, f"{record.image_id}.npz")
      with open(final + _PARTIAL, "wb") as f:
        f.write(encode_npz(record))
        f.flush()
        os.fsync(f.fileno())
      os.replace(final + _PARTIAL, final)
      self.done_ids.add(record.image_id)

  def close(self) -> None:
    pass

  def __enter__(self) -> "NpzDirFeatureWriter":
    return self

  def __exit__(self, *exc) -> None:
    self.close()
