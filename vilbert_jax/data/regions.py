"""Region-level preprocessing of the paper: box selection, 5-d locations, IMG token, padding."""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

IMG_LOCATION = np.array([0.0, 0.0, 1.0, 1.0, 1.0], np.float32)


def select_boxes(cls_prob: Optional[np.ndarray], num_boxes: int, *, conf_thresh: float = 0.2,
                 min_boxes: int = 10, max_boxes: int = 36) -> np.ndarray:
  """Indices of the boxes to keep, as the bottom-up-attention extractor chooses them.

  A box's confidence is its highest non-background class probability. Boxes at or above
  `conf_thresh` are kept, most confident first, but never fewer than `min_boxes` nor more than
  `max_boxes` (both capped by the boxes available). Without class probabilities the first
  `max_boxes` boxes are kept in stored order.

  Args:
    cls_prob: [N, C] class distribution with background at column 0, or None.
    num_boxes: N.

  Returns:
    [K] int64 indices into the N boxes.
  """
  if cls_prob is None:
    return np.arange(min(num_boxes, max_boxes))
  confidence = cls_prob[:, 1:].max(axis=1)
  order = np.argsort(-confidence, kind="stable")
  keep = int((confidence >= conf_thresh).sum())
  keep = min(max(keep, min_boxes), max_boxes, num_boxes)
  return order[:keep]


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


def add_img_token(features: np.ndarray, locations: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
  """Prepends the IMG token: mean of the given region features, location [0,0,1,1,1].

  Args:
    features: [N, D] float32 features of the real regions (after any masking).
    locations: [N, 5] float32.

  Returns:
    features [N+1, D] and locations [N+1, 5].
  """
  mean = features.mean(axis=0, keepdims=True, dtype=np.float32)
  return (np.concatenate([mean, features]).astype(np.float32),
          np.concatenate([IMG_LOCATION[None], locations]).astype(np.float32))


def pad_rows(array: np.ndarray, length: int, value=0) -> np.ndarray:
  """Pads (or truncates) the leading axis of `array` to `length` with `value`."""
  out = np.full((length,) + array.shape[1:], value, dtype=array.dtype)
  n = min(length, array.shape[0])
  out[:n] = array[:n]
  return out


def visual_inputs(features: np.ndarray, boxes: np.ndarray, image_w: float, image_h: float,
                  num_visual_tokens: int) -> dict:
  """IMG token + regions padded to `num_visual_tokens` (IMG included), as model inputs.

  Regions beyond `num_visual_tokens - 1` are dropped (select them first with `select_boxes`).

  Returns:
    dict with `image_feat [R, D]` float32, `image_loc [R, 5]` float32, `image_mask [R]` int32.
  """
  n = min(features.shape[0], num_visual_tokens - 1)
  feat, loc = add_img_token(features[:n], box_locations(boxes[:n], image_w, image_h))
  mask = np.zeros(num_visual_tokens, np.int32)
  mask[:n + 1] = 1
  return {"image_feat": pad_rows(feat, num_visual_tokens),
          "image_loc": pad_rows(loc, num_visual_tokens), "image_mask": mask}


def box_iou(boxes: np.ndarray, target: np.ndarray) -> np.ndarray:
  """IoU of each of [N,4] pixel boxes with one [4] target box -> [N] float32."""
  boxes = np.asarray(boxes, np.float32)
  target = np.asarray(target, np.float32)
  ix1 = np.maximum(boxes[:, 0], target[0])
  iy1 = np.maximum(boxes[:, 1], target[1])
  ix2 = np.minimum(boxes[:, 2], target[2])
  iy2 = np.minimum(boxes[:, 3], target[3])
  inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
  area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
  union = area + (target[2] - target[0]) * (target[3] - target[1]) - inter
  return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0).astype(np.float32)
