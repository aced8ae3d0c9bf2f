"""LMDB feature stores as shipped by the original ViLBERT repositories.

One record per image, keyed by the image id. Values are either pickled dicts (read with the
restricted unpickler) or msgpack maps/lists, with the fields of the TSV format: image_id,
image_w, image_h, num_boxes, boxes, features[, cls_prob]. A msgpack list holds them in that
order. Arrays may be numpy arrays, base64 strings of float32 bytes, or msgpack-numpy maps
({nd, type, shape, data}). A key `keys` holding the pickled list of ids, as the originals
write, is used for ordering and otherwise skipped.
"""
from __future__ import annotations

import base64
import os
import pickle
from typing import Iterator, List, Optional

import msgpack
import numpy as np

from vilbert_jax.data.features.record import (FeatureStoreError, RawRecord, RegionFeatures,
                                               duplicate_id_error, make_record)
from vilbert_jax.data.features.safe_pickle import UnsafePickleError, safe_loads
from vilbert_jax.data.features.tsv import decode_b64_floats

FIELDS = ("image_id", "image_w", "image_h", "num_boxes", "boxes", "features", "cls_prob")
_KEYS_KEY = b"keys"


def _is_pickle(value: bytes) -> bool:
  """Pickle protocols 2-5 start with PROTO (0x80) and the protocol number."""
  return len(value) > 1 and value[0] == 0x80 and 2 <= value[1] <= 5


def _floats(where: str, name: str, value):
  """The array of field `name` (msgpack-numpy map, base64 string/bytes, or anything
  `make_record` checks itself); errors name `where` (key and image id) and the field."""
  if value is None:
    return None
  if isinstance(value, dict) and (b"nd" in value or "nd" in value):  # msgpack-numpy
    get = lambda k: value.get(k, value.get(k.encode()))
    dtype, shape, data = get("type"), get("shape"), get("data")
    dtype = dtype.decode() if isinstance(dtype, bytes) else dtype
    try:
      array = np.frombuffer(data, dtype=np.dtype(dtype))
      if shape is not None:
        array = array.reshape(shape)
    except (TypeError, ValueError) as e:
      raise FeatureStoreError(f"{where}: {name} is not a valid msgpack-numpy array (type "
                              f"{dtype!r}, shape {shape}): {e}") from e
    return array
  if isinstance(value, (bytes, str)):
    return decode_b64_floats(where, name, value.encode() if isinstance(value, str) else value)
  return value


def decode_value(where: str, value: bytes, feature_dim: Optional[int] = None) -> RegionFeatures:
  """Decodes one LMDB value (pickle or msgpack) into a checked record."""
  try:
    item = safe_loads(value) if _is_pickle(value) else msgpack.unpackb(
        value, raw=False, strict_map_key=False)
  except UnsafePickleError as e:
    raise FeatureStoreError(f"{where}: {e}") from e
  except Exception as e:  # Corrupt bytes raise many different types.
    raise FeatureStoreError(f"{where}: cannot decode record: {e!r}") from e
  if isinstance(item, (list, tuple)):
    item = dict(zip(FIELDS, item))
  if not isinstance(item, dict):
    raise FeatureStoreError(f"{where}: record is a {type(item).__name__}, not a dict or list")
  item = {k.decode() if isinstance(k, bytes) else k: v for k, v in item.items()}
  missing = [f for f in FIELDS[:6] if f not in item]
  if missing:
    raise FeatureStoreError(f"{where}: record lacks fields {missing}")
  image_id = item["image_id"]
  ctx = f"{where} (image_id {image_id})"
  return make_record(where, image_id, item["image_w"], item["image_h"], item["num_boxes"],
                     _floats(ctx, "boxes", item["boxes"]),
                     _floats(ctx, "features", item["features"]),
                     _floats(ctx, "cls_prob", item.get("cls_prob")), feature_dim)


class LmdbFeatureStore:
  """Random access and iteration over an LMDB feature store (a folder with data.mdb)."""

  def __init__(self, path: str, feature_dim: Optional[int] = None):
    import lmdb  # Imported here: only LMDB users need the package.
    self.path = path
    self.feature_dim = feature_dim
    self._env = lmdb.open(path, readonly=True, lock=False, readahead=False, meminit=False,
                          max_readers=256, subdir=os.path.isdir(path))
    with self._env.begin() as txn:
      keys_value = txn.get(_KEYS_KEY)
      if keys_value is not None:
        self._keys = [k.decode() if isinstance(k, bytes) else str(k)
                      for k in safe_loads(keys_value)]
        seen = set()
        for i, key in enumerate(self._keys):
          if key in seen:
            name = os.path.basename(path)
            raise duplicate_id_error(key, f"{name} 'keys' entry {self._keys.index(key)}",
                                     f"{name} 'keys' entry {i}")
          seen.add(key)
      else:
        self._keys = [k.decode() for k in txn.cursor().iternext(keys=True, values=False)]

  def keys(self) -> List[str]:
    return list(self._keys)

  def __len__(self) -> int:
    return len(self._keys)

  def __contains__(self, image_id) -> bool:
    with self._env.begin() as txn:
      return txn.get(str(image_id).encode()) is not None

  def raw(self, image_id) -> RawRecord:
    """The undecoded value of `image_id` (raises KeyError naming the store if absent)."""
    with self._env.begin() as txn:
      value = txn.get(str(image_id).encode())
    if value is None:
      raise KeyError(f"image_id {image_id} is not in {self.path}")
    return RawRecord(decode_value, f"{os.path.basename(self.path)} key {image_id}", value,
                     self.feature_dim)

  def __getitem__(self, image_id) -> RegionFeatures:
    return self.raw(image_id)()

  def __iter__(self) -> Iterator[RegionFeatures]:
    for image_id in self._keys:
      yield self[image_id]


def encode_value(record: RegionFeatures) -> bytes:
  """One record in the original repositories' layout: a pickled dict whose arrays are base64
  strings of float32 bytes; the inverse of `decode_value`."""
  b64 = lambda a: base64.b64encode(np.ascontiguousarray(a, np.float32).tobytes()).decode()
  item = {"image_id": record.image_id, "image_w": record.image_w, "image_h": record.image_h,
          "num_boxes": record.num_boxes, "boxes": b64(record.boxes),
          "features": b64(record.features)}
  if record.cls_prob is not None:
    item["cls_prob"] = b64(record.cls_prob)
  return pickle.dumps(item, protocol=4)


class LmdbFeatureWriter:
  """Adds records to an LMDB feature store (a folder holding data.mdb), one transaction per
  `write`, so a killed run keeps every batch written before it.

  `close` stores the pickled list of ids under `keys`, as the originals do; opening removes
  it (it is rewritten at close), so a killed run never leaves a stale list.
  """

  def __init__(self, path: str, map_size: int = 1 << 30):
    import lmdb  # Imported here: only LMDB users need the package.
    self.path = path
    os.makedirs(path, exist_ok=True)
    self._env = lmdb.open(path, map_size=map_size, subdir=True)
    self._map_full = lmdb.MapFullError
    with self._env.begin(write=True) as txn:
      txn.delete(_KEYS_KEY)
      self._ids = [k.decode() for k in txn.cursor().iternext(keys=True, values=False)]
    self.done_ids = set(self._ids)

  def write(self, records: List[RegionFeatures]) -> None:
    """Stores `records` in one transaction (growing the map when it is full)."""
    items = [(r.image_id.encode(), encode_value(r)) for r in records]
    while True:
      try:
        with self._env.begin(write=True) as txn:
          for key, value in items:
            txn.put(key, value)
        break
      except self._map_full:
        self._env.set_mapsize(self._env.info()["map_size"] * 2)
    new = [r.image_id for r in records if r.image_id not in self.done_ids]
    self._ids += new
    self.done_ids.update(new)

  def close(self) -> None:
    with self._env.begin(write=True) as txn:
      txn.put(_KEYS_KEY, pickle.dumps([i.encode() for i in self._ids], protocol=4))
    self._env.close()

  def __enter__(self) -> "LmdbFeatureWriter":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def lmdb_ids(path: str) -> List[str]:
  """The image ids stored in the LMDB folder `path` ([] if it holds no data.mdb), read
  without keeping the environment open (a writer may open it next in this process)."""
  if not os.path.exists(os.path.join(path, "data.mdb")):
    return []
  import lmdb
  env = lmdb.open(path, readonly=True, lock=False, subdir=True)
  try:
    with env.begin() as txn:
      return [k.decode() for k in txn.cursor().iternext(keys=True, values=False)
              if k != _KEYS_KEY]
  finally:
    env.close()
