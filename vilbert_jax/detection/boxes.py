"""Box arithmetic: (x1, y1, x2, y2) float boxes, decoding deltas, clipping, pairwise IoU."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

SCALE_CLAMP = math.log(1000.0 / 16)  # Largest dw/dh before exp (detectron2's default).


def apply_deltas(deltas: jax.Array, boxes: jax.Array,
                 weights: tuple[float, float, float, float]) -> jax.Array:
  """Decodes R-CNN deltas (dx, dy, dw, dh) against `boxes`.

  deltas [..., K*4] (K boxes per row, e.g. one per class), boxes [..., 4] ->
  [..., K*4] decoded boxes. Widths are x2 - x1 (no "+1"), as in the port.
  """
  boxes = boxes.astype(deltas.dtype)
  widths = boxes[..., 2] - boxes[..., 0]
  heights = boxes[..., 3] - boxes[..., 1]
  ctr_x = boxes[..., 0] + 0.5 * widths
  ctr_y = boxes[..., 1] + 0.5 * heights
  wx, wy, ww, wh = weights
  d = deltas.reshape(*deltas.shape[:-1], -1, 4)
  dx, dy = d[..., 0] / wx, d[..., 1] / wy
  dw = jnp.minimum(d[..., 2] / ww, SCALE_CLAMP)
  dh = jnp.minimum(d[..., 3] / wh, SCALE_CLAMP)
  pred_ctr_x = dx * widths[..., None] + ctr_x[..., None]
  pred_ctr_y = dy * heights[..., None] + ctr_y[..., None]
  pred_w = jnp.exp(dw) * widths[..., None]
  pred_h = jnp.exp(dh) * heights[..., None]
  out = jnp.stack([pred_ctr_x - 0.5 * pred_w, pred_ctr_y - 0.5 * pred_h,
                   pred_ctr_x + 0.5 * pred_w, pred_ctr_y + 0.5 * pred_h], axis=-1)
  return out.reshape(deltas.shape)


def clip(boxes: jax.Array, hw: jax.Array) -> jax.Array:
  """Clips [..., 4] boxes to [0, w] x [0, h]; `hw` broadcasts against boxes[..., 0]."""
  h = jnp.asarray(hw[..., 0], boxes.dtype)
  w = jnp.asarray(hw[..., 1], boxes.dtype)
  x1 = jnp.clip(boxes[..., 0], 0, w)
  y1 = jnp.clip(boxes[..., 1], 0, h)
  x2 = jnp.clip(boxes[..., 2], 0, w)
  y2 = jnp.clip(boxes[..., 3], 0, h)
  return jnp.stack([x1, y1, x2, y2], axis=-1)


def pairwise_iou(a: jax.Array, b: jax.Array, plus_one: bool = False) -> jax.Array:
  """IoU of [N, 4] and [M, 4] boxes -> [N, M] float32.

  ``plus_one``: the Caffe convention (areas and intersections of pixel-inclusive boxes,
  ``x2 - x1 + 1``), used by the bottom-up selection rule; torchvision's NMS uses none.
  """
  one = 1.0 if plus_one else 0.0
  area_a = (a[:, 2] - a[:, 0] + one) * (a[:, 3] - a[:, 1] + one)
  area_b = (b[:, 2] - b[:, 0] + one) * (b[:, 3] - b[:, 1] + one)
  iw = jnp.maximum(jnp.minimum(a[:, None, 2], b[None, :, 2])
                   - jnp.maximum(a[:, None, 0], b[None, :, 0]) + one, 0.0)
  ih = jnp.maximum(jnp.minimum(a[:, None, 3], b[None, :, 3])
                   - jnp.maximum(a[:, None, 1], b[None, :, 1]) + one, 0.0)
  inter = iw * ih
  return inter / (area_a[:, None] + area_b[None, :] - inter)
