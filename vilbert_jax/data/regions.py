"""Region-level preprocessing of the paper: box selection, 5-d locations, IMG token, padding.

Box IoU lives with the grounding metrics (`vilbert_jax.metrics.box_iou`)."""
from __future__ import annotations

from typing import Optional

import numpy as np

IMG_LOCATION = np.array([0.0, 0.0, 1.0, 1.0, 1.0], np.float32)


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


def visual_inputs(features: np.ndarray, boxes: np.ndarray, image_w: float, image_h: float,
                  num_visual_tokens: int, zero_rows: Optional[np.ndarray] = None) -> dict:
  """IMG token + regions padded to `num_visual_tokens` (IMG included), as model inputs.

  Regions beyond `num_visual_tokens - 1` are dropped (select them first with `select_boxes`).
  The IMG token's feature is the mean of the real regions after zeroing `zero_rows` (region
  masking), its location [0,0,1,1,1]; padding has zero features and locations and mask 0.

  Args:
    features: [N, D] region features; boxes: [N, 4] pixels.
    zero_rows: optional [N] bool, regions whose feature is zeroed.

  Returns:
    dict with `image_feat [R, D]` (float32, or float16 for float16 features; the IMG mean is
    accumulated in float32), `image_loc [R, 5]` float32, `image_mask [R]` int32.
  """
  n = min(features.shape[0], num_visual_tokens - 1)
  dtype = np.float16 if features.dtype == np.float16 else np.float32
  feat = np.zeros((num_visual_tokens, features.shape[1]), dtype)
  feat[1:n + 1] = features[:n]
  if zero_rows is not None:
    feat[1:n + 1][zero_rows[:n]] = 0.0
  feat[0] = feat[1:n + 1].mean(axis=0, dtype=np.float32)
  loc = np.zeros((num_visual_tokens, 5), np.float32)
  loc[0] = IMG_LOCATION
  loc[1:n + 1] = box_locations(boxes[:n], image_w, image_h)
  mask = np.zeros(num_visual_tokens, np.int32)
  mask[:n + 1] = 1
  return {"image_feat": feat, "image_loc": loc, "image_mask": mask}


def pad_rows(array: np.ndarray, length: int, value=0) -> np.ndarray:
  """Pads (or truncates) the leading axis of `array` to `length` with `value`."""
  out = np.full((length,) + array.shape[1:], value, dtype=array.dtype)
  n = min(length, array.shape[0])
  out[:n] = array[:n]
  return out
