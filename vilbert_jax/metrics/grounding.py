"""RefCOCO+ referring-expression grounding: box IoU, soft-IoU targets and accuracy.

Boxes are ``[x1, y1, x2, y2]`` in pixels with inclusive pixel coordinates, as in the original
ViLBERT RefCOCO+ code (``iou`` in ``vilbert/datasets/refer_expression_dataset.py``): a box
covers ``(x2 - x1 + 1) * (y2 - y1 + 1)`` pixels, and two boxes that share a pixel column or row
overlap. (The original applies this to the ground truth ``[x, y, x + w, y + h]`` made from the
COCO ``[x, y, w, h]`` box as well, so that box is one pixel larger in each direction; pass the
boxes the same way to reproduce its numbers.)
"""
from __future__ import annotations

import numpy as np

IOU_THRESHOLD = 0.5


def box_iou(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
  """Pairwise intersection over union, inclusive-pixel ("+1") convention.

  Args:
    boxes_a: [N, 4] boxes x1, y1, x2, y2 in pixels, x1 <= x2 and y1 <= y2.
    boxes_b: [M, 4] boxes, same format.

  Returns:
    [N, M] float64 IoU in [0, 1].

  Raises:
    ValueError: on wrong shapes or boxes with x2 < x1 or y2 < y1.
  """
  a = _check_boxes(boxes_a, "boxes_a")[:, None, :]
  b = _check_boxes(boxes_b, "boxes_b")[None, :, :]
  inter_w = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + 1,
                    0, None)
  inter_h = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + 1,
                    0, None)
  inter = inter_w * inter_h
  union = _area(a) + _area(b) - inter
  return inter / union


def _area(boxes: np.ndarray) -> np.ndarray:
  """Pixel count of [..., 4] inclusive-coordinate boxes."""
  return (boxes[..., 2] - boxes[..., 0] + 1) * (boxes[..., 3] - boxes[..., 1] + 1)


def _check_boxes(boxes: np.ndarray, name: str) -> np.ndarray:
  """[K, 4] float64 boxes, validated."""
  boxes = np.asarray(boxes, np.float64)
  if boxes.ndim != 2 or boxes.shape[1] != 4:
    raise ValueError(f"{name} must be [num_boxes, 4] (x1, y1, x2, y2), got shape {boxes.shape}.")
  bad = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
  if np.any(bad):
    i = int(np.argmax(bad))
    raise ValueError(f"{name}[{i}] = {boxes[i].tolist()} has x2 < x1 or y2 < y1; boxes are "
                     "x1, y1, x2, y2 (not x, y, w, h).")
  return boxes


def grounding_targets(ious: np.ndarray, threshold: float = IOU_THRESHOLD) -> np.ndarray:
  """Soft training targets: each region's IoU with the ground truth, 0 where below `threshold`.

  As the original, an IoU equal to the threshold is kept.

  Args:
    ious: [..., R] IoU of each region with the ground-truth box.
    threshold: IoUs below it become 0.

  Returns:
    float32 targets, same shape as `ious`.
  """
  ious = np.asarray(ious, np.float32)
  return np.where(ious >= threshold, ious, 0.0).astype(np.float32)


def grounding_correct(scores: np.ndarray, ious: np.ndarray, mask: np.ndarray,
                      threshold: float = IOU_THRESHOLD) -> np.ndarray:
  """Per expression: does the top-scoring unmasked region overlap the ground truth enough?

  The IMG token is a candidate like any region: give it its own IoU (the original uses the
  whole-image box) and mask 1. Among tied top scores the first region is taken.

  Args:
    scores: [B, R] region scores (logits), higher = better.
    ious: [B, R] IoU of each region with the ground-truth box (raw, not thresholded).
    mask: [B, R] 1 (or True) for real candidates, 0 for padding.
    threshold: least IoU counted as correct; SPEC uses IoU >= 0.5. (The original code tests
      IoU > 0.5, which differs only for an IoU of exactly 0.5.)

  Returns:
    [B] bool.

  Raises:
    ValueError: on mismatched shapes, a row without any candidate, or a non-finite score of a
      candidate.
  """
  scores = np.asarray(scores, np.float64)
  ious = np.asarray(ious, np.float64)
  mask = np.asarray(mask).astype(bool)
  if scores.ndim != 2 or ious.shape != scores.shape or mask.shape != scores.shape:
    raise ValueError(f"scores, ious and mask must all be [batch, regions], got shapes "
                     f"{scores.shape}, {ious.shape} and {mask.shape}.")
  empty = ~mask.any(axis=1)
  if np.any(empty):
    raise ValueError(f"row {int(np.argmax(empty))} has no unmasked region to choose from; drop "
                     "padded examples before scoring.")
  if not np.all(np.isfinite(scores[mask])):
    raise ValueError("non-finite score on an unmasked region.")
  top = np.argmax(np.where(mask, scores, -np.inf), axis=1)
  return ious[np.arange(scores.shape[0]), top] >= threshold


def grounding_accuracy(scores: np.ndarray, ious: np.ndarray, mask: np.ndarray,
                       threshold: float = IOU_THRESHOLD) -> float:
  """Fraction of expressions whose top-scoring unmasked region has IoU >= `threshold`.

  Args:
    scores: [B, R] region scores, higher = better.
    ious: [B, R] IoU of each region with the ground-truth box.
    mask: [B, R] 1 for real candidates (IMG token included), 0 for padding.
    threshold: least IoU counted as correct.

  Returns:
    accuracy in [0, 1] (see `grounding_correct`).
  """
  return float(np.mean(grounding_correct(scores, ious, mask, threshold)))
