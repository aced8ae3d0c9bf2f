"""One image's detector output, and the checks every store applies to it."""
from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import numpy as np


class FeatureStoreError(ValueError):
  """A feature file holds a record that cannot be used; the message names file and row."""


@dataclasses.dataclass(frozen=True)
class RegionFeatures:
  """Region features of one image, as a bottom-up-attention detector writes them.

  Attributes:
    image_id: the image's id as a string (the key used by the annotation files).
    features: [num_boxes, feature_dim] float32 pooled region features.
    boxes: [num_boxes, 4] float32 boxes in pixels, (x1, y1, x2, y2).
    image_w: image width in pixels.
    image_h: image height in pixels.
    cls_prob: [num_boxes, num_classes] float32 detector class distribution (class 0 is the
      background), or None when the store has none.
  """
  image_id: str
  features: np.ndarray
  boxes: np.ndarray
  image_w: int
  image_h: int
  cls_prob: Optional[np.ndarray] = None

  @property
  def num_boxes(self) -> int:
    return int(self.features.shape[0])


@dataclasses.dataclass(frozen=True)
class RawRecord:
  """One image's undecoded bytes and how to decode them; picklable, so decoding can run in
  another process (parallel builds). Calling it returns the checked `RegionFeatures`.

  Attributes:
    decode: module-level function (where, payload, feature_dim) -> RegionFeatures.
    where: "file row/key" for error messages.
    payload: the raw bytes (a TSV line, an LMDB value, a file's contents).
    feature_dim: expected feature width or None.
  """
  decode: Callable[[str, bytes, Optional[int]], RegionFeatures]
  where: str
  payload: bytes
  feature_dim: Optional[int] = None

  def __call__(self) -> RegionFeatures:
    return self.decode(self.where, self.payload, self.feature_dim)


def duplicate_id_error(image_id: str, first: str, second: str) -> FeatureStoreError:
  """The error for an image id stored twice in one store (`first`, `second`: file row/key).

  Never skipped: which of the two records is right cannot be told.
  """
  return FeatureStoreError(
      f"{second} (image_id {image_id}): duplicate image id, also at {first}; a store must hold "
      "each image once (remove one of them)")


def make_record(where: str, image_id, image_w, image_h, num_boxes, boxes, features,
                cls_prob=None, feature_dim: Optional[int] = None) -> RegionFeatures:
  """Builds a checked `RegionFeatures` from flat or shaped arrays.

  Args:
    where: "file row/key" description used in error messages.
    image_id, image_w, image_h, num_boxes: scalar fields (any type convertible to str/int).
    boxes: float32 array with num_boxes * 4 values.
    features: float32 array with num_boxes * D values.
    cls_prob: optional float32 array with num_boxes * C values.
    feature_dim: the expected D, or None to infer it.

  Raises:
    FeatureStoreError: on any inconsistency, naming `where` and the image id.
  """
  image_id = image_id.decode() if isinstance(image_id, bytes) else str(image_id)
  where = f"{where} (image_id {image_id})"
  try:
    image_w, image_h, num_boxes = int(image_w), int(image_h), int(num_boxes)
  except (TypeError, ValueError) as e:
    raise FeatureStoreError(f"{where}: image_w/image_h/num_boxes are not integers: {e}") from e
  if num_boxes <= 0 or image_w <= 0 or image_h <= 0:
    raise FeatureStoreError(
        f"{where}: num_boxes={num_boxes}, image_w={image_w}, image_h={image_h} must be > 0")
  boxes = _shaped(where, "boxes", boxes, num_boxes, 4)
  features = _shaped(where, "features", features, num_boxes, feature_dim)
  if cls_prob is not None:
    cls_prob = _shaped(where, "cls_prob", cls_prob, num_boxes, None)
  return RegionFeatures(image_id, features, boxes, image_w, image_h, cls_prob)


def _shaped(where: str, name: str, values, num_boxes: int, width: Optional[int]) -> np.ndarray:
  """Reshapes `values` to [num_boxes, width] float32, checking type, size and finiteness."""
  try:
    array = np.asarray(values)
  except ValueError as e:  # ragged nested lists
    raise FeatureStoreError(f"{where}: {name} is not a rectangular array: {e}") from e
  if array.dtype.kind not in "fiu":
    raise FeatureStoreError(f"{where}: {name} holds {array.dtype} values, not numbers")
  values = array.astype(np.float32, copy=False)
  if values.ndim == 2 and values.shape[0] != num_boxes:
    raise FeatureStoreError(
        f"{where}: {name} has {values.shape[0]} rows but num_boxes is {num_boxes}")
  size = values.size
  if size == 0 or size % num_boxes:
    raise FeatureStoreError(
        f"{where}: {name} has {size} values, not a multiple of num_boxes={num_boxes}")
  if width is not None and size != num_boxes * width:
    raise FeatureStoreError(
        f"{where}: {name} has {size // num_boxes} values per box, expected {width}")
  if not np.all(np.isfinite(values)):
    raise FeatureStoreError(f"{where}: {name} contains NaN or Inf")
  return values.reshape(num_boxes, size // num_boxes)

