"""Bottom-up-attention TSV files: one image per line, arrays as base64 float32 bytes.

Columns (tab-separated, no header): image_id, image_w, image_h, num_boxes, boxes, features
and optionally cls_prob. Files can be tens of gigabytes: iteration streams line by line, and
random access uses an offset index built by one scan on first use.
"""
from __future__ import annotations

import base64
import binascii
import mmap
import os
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np

from vilbert_jax.data.features.record import (FeatureStoreError, RawRecord, RegionFeatures,
                                               duplicate_id_error, make_record)

_MIN_COLUMNS = 6  # image_id, image_w, image_h, num_boxes, boxes, features
_MAX_COLUMNS = 7  # ... cls_prob


def decode_b64_floats(where: str, name: str, text: bytes) -> np.ndarray:
  """Decodes base64 float32 bytes to a flat float32 array; errors name `where` and the field."""
  try:
    raw = base64.b64decode(text, validate=True)
  except (binascii.Error, ValueError) as e:
    raise FeatureStoreError(f"{where}: {name} is not valid base64 (truncated?): {e}") from e
  if len(raw) % 4:
    raise FeatureStoreError(f"{where}: {name} has {len(raw)} bytes, not whole float32 values")
  return np.frombuffer(raw, dtype=np.float32)


def parse_tsv_line(where: str, line: bytes, feature_dim: Optional[int] = None) -> RegionFeatures:
  """Parses one TSV line into a checked record; `where` is e.g. "feats.tsv row 3"."""
  cols = line.rstrip(b"\r\n").split(b"\t")
  image_id = cols[0].decode(errors="replace")
  ctx = f"{where} (image_id {image_id})"
  if not _MIN_COLUMNS <= len(cols) <= _MAX_COLUMNS:
    raise FeatureStoreError(
        f"{ctx}: expected {_MIN_COLUMNS} or {_MAX_COLUMNS} tab-separated columns "
        "(image_id, image_w, image_h, num_boxes, boxes, features[, cls_prob]), "
        f"found {len(cols)}")
  boxes = decode_b64_floats(ctx, "boxes", cols[4])
  features = decode_b64_floats(ctx, "features", cols[5])
  cls_prob = decode_b64_floats(ctx, "cls_prob", cols[6]) if len(cols) == 7 else None
  return make_record(where, image_id, cols[1], cols[2], cols[3], boxes, features, cls_prob,
                     feature_dim)


def encode_tsv_line(record: RegionFeatures) -> bytes:
  """Writes `record` as one TSV line (with trailing newline), the inverse of `parse_tsv_line`."""
  cols = [record.image_id.encode(), str(record.image_w).encode(), str(record.image_h).encode(),
          str(record.num_boxes).encode()]
  arrays = [record.boxes, record.features]
  if record.cls_prob is not None:
    arrays.append(record.cls_prob)
  cols += [base64.b64encode(np.ascontiguousarray(a, np.float32).tobytes()) for a in arrays]
  return b"\t".join(cols) + b"\n"


def _place(path: str, row: int) -> str:
  return f"{os.path.basename(path)} row {row}"


def read_line(path: str, row: int, offset: int, length: int,
              feature_dim: Optional[int] = None) -> RawRecord:
  """The undecoded line of `length` bytes at byte `offset` (row `row`) of TSV file `path`."""
  with open(path, "rb", buffering=0) as f:
    line = os.pread(f.fileno(), length, offset)
  return RawRecord(parse_tsv_line, _place(path, row), line, feature_dim)


_WHITESPACE = frozenset(b" \t\n\r\x0b\x0c")  # what bytes.strip() removes


def lines(path: str) -> Iterator[Tuple[int, int, int, bytes]]:
  """(row, byte offset, length in bytes, image id) of each non-blank line of `path`; rows
  count from 1, blank lines included; a line's length includes its newline.

  The file is mapped, not read line by line: finding the newlines and the first tab of each
  line is a memchr over the page cache, ~5x cheaper than iterating lines (a 36-box line with
  cls_prob is ~700 kB). The mapping is private and read-only: FUSE mounts (gcsfuse, ...)
  often refuse shared mappings. The image id is what precedes the line's first tab (the whole
  line, newline included, if it has none: that line fails to parse later).
  """
  if os.path.getsize(path) == 0:
    return
  with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, flags=mmap.MAP_PRIVATE,
                                        prot=mmap.PROT_READ) as m:
    end, offset, row = len(m), 0, 0
    while offset < end:
      row += 1
      newline = m.find(b"\n", offset)
      stop = end if newline < 0 else newline + 1
      if m[offset] in _WHITESPACE and not m[offset:stop].strip():
        offset = stop
        continue  # a blank line
      tab = m.find(b"\t", offset, stop)
      yield row, offset, stop - offset, m[offset:stop if tab < 0 else tab]
      offset = stop


class TsvFeatureStore:
  """Reads one or more bottom-up-attention TSV files (a file or a folder of `*.tsv`)."""

  def __init__(self, paths: List[str], feature_dim: Optional[int] = None):
    self.paths = list(paths)
    self.feature_dim = feature_dim
    self._index: Optional[Dict[str, tuple]] = None

  def __iter__(self) -> Iterator[RegionFeatures]:
    """Streams every record in file order."""
    for path in self.paths:
      name = os.path.basename(path)
      with open(path, "rb") as f:
        for row, line in enumerate(f, 1):
          if line.strip():
            yield parse_tsv_line(f"{name} row {row}", line, self.feature_dim)

  def _build_index(self) -> Dict[str, tuple]:
    index = {}
    for path in self.paths:
      for row, offset, length, image_id in lines(path):
        image_id = image_id.decode(errors="replace")
        if image_id in index:
          raise duplicate_id_error(image_id, _place(*index[image_id][:2]), _place(path, row))
        index[image_id] = (path, row, offset, length)
    return index

  def keys(self) -> List[str]:
    if self._index is None:
      self._index = self._build_index()
    return list(self._index)

  def __contains__(self, image_id) -> bool:
    self.keys()
    return str(image_id) in self._index

  def __len__(self) -> int:
    return len(self.keys())

  def location(self, image_id) -> Tuple[str, int, int, int]:
    """(file, row, byte offset, length in bytes) of the line of `image_id` (KeyError naming
    the files if absent)."""
    self.keys()
    try:
      return self._index[str(image_id)]
    except KeyError:
      raise KeyError(f"image_id {image_id} is not in {', '.join(self.paths)}") from None

  def raw(self, image_id) -> RawRecord:
    """The undecoded line of `image_id` (raises KeyError naming the files if absent)."""
    return read_line(*self.location(image_id), self.feature_dim)

  def __getitem__(self, image_id) -> RegionFeatures:
    return self.raw(image_id)()


def complete_tsv_ids(path: str) -> List[str]:
  """The image ids of the complete (newline-terminated) lines of `path`; [] if it is missing.

  A line without its newline is what a killed writer leaves; it does not count.
  """
  if not os.path.exists(path):
    return []
  ids = []
  with open(path, "rb") as f:
    for line in f:
      if line.endswith(b"\n") and line.strip():
        ids.append(line.split(b"\t", 1)[0].decode())
  return ids


class TsvFeatureWriter:
  """Appends records to a bottom-up-attention TSV file, one flushed line per image.

  Opening an existing file keeps its complete lines and cuts a partial last line (a killed
  run's), so a rerun appends after the last finished image. `done_ids` lists what is there.
  """

  def __init__(self, path: str):
    self.path = path
    self.done_ids = set(complete_tsv_ids(path))
    if os.path.dirname(path):
      os.makedirs(os.path.dirname(path), exist_ok=True)
    self._file = open(path, "ab")
    self._file.truncate(_complete_length(path))
    self._file.seek(0, os.SEEK_END)

  def write(self, records: List[RegionFeatures]) -> None:
    """Appends `records`; they are on disk when this returns."""
    self._file.write(b"".join(encode_tsv_line(r) for r in records))
    self._file.flush()
    os.fsync(self._file.fileno())
    self.done_ids.update(r.image_id for r in records)

  def close(self) -> None:
    self._file.close()

  def __enter__(self) -> "TsvFeatureWriter":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def _complete_length(path: str) -> int:
  """Bytes of `path` up to and including its last newline."""
  with open(path, "rb") as f:
    f.seek(0, os.SEEK_END)
    end = f.tell()
    block = 1 << 16
    while end > 0:
      start = max(0, end - block)
      f.seek(start)
      chunk = f.read(end - start)
      newline = chunk.rfind(b"\n")
      if newline >= 0:
        return start + newline + 1
      end = start
  return 0
