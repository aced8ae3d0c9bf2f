"""Region-level preprocessing of the paper: box selection, 5-d locations, IMG token, padding.

Box IoU lives with the grounding metrics (`vilbert_jax.metrics.box_iou`)."""
from __future__ import annotations

from typing import Dict, NamedTuple, Optional, Sequence

import numpy as np

IMG_LOCATION = np.array([0.0, 0.0, 1.0, 1.0, 1.0], np.float32)
_F16_EXPONENT = 0x7C00
_F16_TO_F32_BITS = np.int32(-0x70002000)  # 0x8FFFE000: the sign bit and the 15 shifted bits
_F16_TO_F32_SCALE = np.float32(2.0**112)  # 2**(127 - 15): float32 bias minus float16 bias


def as_float(array: np.ndarray, dtype=np.float32) -> np.ndarray:
  """`array` as `dtype` (a view where it has that dtype already); float16 -> float32 exactly.

  numpy widens float16 one element at a time (~1 ns per value here: 70 us for 36 x 2048
  features, the largest cost of a pretraining example). For finite values the float32 with
  the same sign, exponent and mantissa bits shifted into place, multiplied by 2**112, is the
  exact value, subnormals included; this takes a third of the time. Arrays holding inf or NaN
  take numpy's path.
  """
  if array.dtype != np.float16 or np.dtype(dtype) != np.float32:
    return np.asarray(array, dtype)
  half = array.view(np.int16)
  if ((half & _F16_EXPONENT) == _F16_EXPONENT).any():
    return array.astype(np.float32)
  out = ((half.astype(np.int32) << 13) & _F16_TO_F32_BITS).view(np.float32)
  out *= _F16_TO_F32_SCALE
  return out


def select_boxes(cls_prob: Optional[np.ndarray], num_boxes: int, *, conf_thresh: float = 0.2,
                 min_boxes: int = 10, max_boxes: int = 36) -> np.ndarray:
  """Indices of the boxes to keep, as the bottom-up-attention extractor chooses them.

  A box's confidence is its highest non-background class probability. The boxes at or above
  `conf_thresh` are kept, but never fewer than `min_boxes` nor more than `max_boxes` (both
  capped by the boxes available), the most confident first in line. Kept boxes stay in stored
  order. Without class probabilities the first `max_boxes` boxes are kept.

  Args:
    cls_prob: [N, C] class distribution with background at column 0, or None.
    num_boxes: N.

  Returns:
    [K] int64 increasing indices into the N boxes.
  """
  if cls_prob is None:
    return np.arange(min(num_boxes, max_boxes))
  confidence = cls_prob[:, 1:].max(axis=1)
  order = np.argsort(-confidence, kind="stable")
  keep = int((confidence >= conf_thresh).sum())
  keep = min(max(keep, min_boxes), max_boxes, num_boxes)
  return np.sort(order[:keep])


def box_locations(boxes: np.ndarray, image_w: float, image_h: float) -> np.ndarray:
  """[N,4] pixel boxes (x1,y1,x2,y2) -> [N,5] float32 [x1/W, y1/H, x2/W, y2/H, area/(W*H)]."""
  boxes = np.asarray(boxes, np.float32)
  loc = np.empty((boxes.shape[0], 5), np.float32)
  loc[:, 0] = boxes[:, 0] / image_w
  loc[:, 1] = boxes[:, 1] / image_h
  loc[:, 2] = boxes[:, 2] / image_w
  loc[:, 3] = boxes[:, 3] / image_h
  loc[:, 4] = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) / (image_w * image_h)
  return loc


class Regions(NamedTuple):
  """One image's kept regions, before the IMG token and padding are added.

  Attributes:
    features: [N, D] float32 or float16; boxes: [N, 4] pixels (x1, y1, x2, y2).
    image_w, image_h: image size in pixels.
    cls_prob: [N, C] detector class distribution, or None.
    zero_rows: [N] bool regions whose feature region masking zeroes, or None.
  """
  features: np.ndarray
  boxes: np.ndarray
  image_w: float
  image_h: float
  cls_prob: Optional[np.ndarray] = None
  zero_rows: Optional[np.ndarray] = None


def visual_batch(images: Sequence[Regions], num_visual_tokens: int) -> Dict[str, np.ndarray]:
  """IMG token + regions padded to `num_visual_tokens` (R, IMG included), as model inputs.

  Regions beyond R - 1 are dropped (select them first with `select_boxes`). The IMG token's
  feature is the mean of the real regions after zeroing `zero_rows` (region masking), its
  location [0,0,1,1,1]; padding has zero features and locations and mask 0. Features are
  written straight into the batch: one copy per example.

  Returns:
    dict with `image_feat [B, R, D]` (float32, or float16 for float16 features; the IMG mean
    is accumulated in float32), `image_loc [B, R, 5]` float32, `image_mask [B, R]` int32.
  """
  first = images[0].features
  dtype = np.float16 if first.dtype == np.float16 else np.float32
  feat = np.zeros((len(images), num_visual_tokens, first.shape[1]), dtype)
  loc = np.zeros((len(images), num_visual_tokens, 5), np.float32)
  loc[:, 0] = IMG_LOCATION
  mask = np.zeros((len(images), num_visual_tokens), np.int32)
  for b, image in enumerate(images):
    n = min(image.features.shape[0], num_visual_tokens - 1)
    rows = feat[b, 1:n + 1]
    rows[:] = image.features[:n]
    if image.zero_rows is not None:
      rows[image.zero_rows[:n]] = 0.0
    feat[b, 0] = as_float(rows).mean(axis=0)
    loc[b, 1:n + 1] = box_locations(image.boxes[:n], image.image_w, image.image_h)
    mask[b, :n + 1] = 1
  return {"image_feat": feat, "image_loc": loc, "image_mask": mask}


def visual_inputs(image: Regions, num_visual_tokens: int) -> Dict[str, np.ndarray]:
  """`visual_batch` of one image, without the batch axis: `image_feat [R, D]` etc."""
  return {k: v[0] for k, v in visual_batch([image], num_visual_tokens).items()}


def pad_rows(array: np.ndarray, length: int, value=0) -> np.ndarray:
  """Pads (or truncates) the leading axis of `array` to `length` with `value`; an array of
  that length already is returned as is, not copied."""
  if array.shape[0] == length:
    return array
  out = np.full((length,) + array.shape[1:], value, dtype=array.dtype)
  n = min(length, array.shape[0])
  out[:n] = array[:n]
  return out
