"""Greedy non-maximum suppression with static shapes.

Greedy NMS visits boxes in descending score and keeps a box unless an already kept box
overlaps it by IoU > threshold (the strict test of torchvision and of the Caffe GPU kernel).
Given the suppression relation ``M[i, j]`` ("i comes first and overlaps j"), the kept set is
the unique solution of ``keep[j] = candidate[j] and not any_i(keep[i] and M[i, j])``; the
Jacobi iteration of that equation reaches it exactly (position j is final once every earlier
position is), in as many steps as the longest chain of suppressions, usually a handful.

``nms_sorted`` (RPN, the port's rule) works through score-sorted boxes in tiles and stops as
soon as ``max_output`` boxes are kept, returning a fixed count of indices and a validity mask;
``survivors_per_class`` (the bottom-up rule) runs one NMS per class over the same boxes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from vilbert_jax.detection.boxes import pairwise_iou


def _solve(candidate: jax.Array, suppresses: jax.Array) -> jax.Array:
  """Kept mask [..., N] given candidates [..., N] and the relation [..., N, N] (i -> j)."""
  m = suppresses.astype(jnp.float32)

  def step(state):
    keep, _ = state
    hit = jnp.einsum("...i,...ij->...j", keep.astype(jnp.float32), m,
                     precision=lax.Precision.HIGHEST) > 0
    new = candidate & ~hit
    return new, jnp.any(new != keep)

  return lax.while_loop(lambda s: s[1], step, (candidate, jnp.array(True)))[0]


def nms_sorted(boxes: jax.Array, valid: jax.Array, iou_threshold: float, max_output: int,
               plus_one: bool = False, tile: int = 512) -> tuple[jax.Array, jax.Array]:
  """Greedy NMS of boxes already sorted by descending score (ties: lower index first).

  Args:
    boxes: [N, 4]; valid: [N] bool (invalid boxes are neither kept nor suppress others).
    iou_threshold: a box is suppressed when IoU > this with a kept box.
    max_output: how many kept boxes to return (the first ones in score order).
    plus_one: Caffe "+1" areas (see ``pairwise_iou``).
    tile: boxes examined per step; processing stops once `max_output` are kept.

  Returns:
    (indices [max_output] int32 into `boxes`, in score order, padded with 0;
     mask [max_output] bool, True for the real entries).
  """
  n = boxes.shape[0]
  tile = min(tile, n)
  num_tiles = -(-n // tile)
  pad = num_tiles * tile - n
  boxes = jnp.pad(boxes.astype(jnp.float32), ((0, pad), (0, 0)))
  valid = jnp.pad(valid, (0, pad))
  order = jnp.arange(tile)
  earlier = order[:, None] < order[None, :]

  def body(state):
    t, count, kept_boxes, kept_idx = state
    tb = lax.dynamic_slice_in_dim(boxes, t * tile, tile)
    tv = lax.dynamic_slice_in_dim(valid, t * tile, tile)
    prev = jnp.arange(max_output)[:, None] < count
    hit = jnp.any(prev & (pairwise_iou(kept_boxes, tb, plus_one) > iou_threshold), axis=0)
    keep = _solve(tv & ~hit, earlier & (pairwise_iou(tb, tb, plus_one) > iou_threshold))
    pos = jnp.where(keep, count + jnp.cumsum(keep) - 1, max_output)
    kept_boxes = kept_boxes.at[pos].set(tb, mode="drop")
    kept_idx = kept_idx.at[pos].set(t * tile + order, mode="drop")
    count = jnp.minimum(count + jnp.sum(keep), max_output)
    return t + 1, count, kept_boxes, kept_idx

  init = (jnp.array(0), jnp.array(0), jnp.zeros((max_output, 4), jnp.float32),
          jnp.zeros((max_output,), jnp.int32))
  _, count, _, kept_idx = lax.while_loop(
      lambda s: (s[0] < num_tiles) & (s[1] < max_output), body, init)
  return kept_idx, jnp.arange(max_output) < count


def survivors_per_class(boxes: jax.Array, scores: jax.Array, valid: jax.Array,
                        iou_threshold: float, plus_one: bool = True,
                        class_chunk: int = 128) -> jax.Array:
  """One greedy NMS per class over the same boxes: which boxes survive in which class.

  Args:
    boxes: [N, 4]; scores: [N, C] per-class scores; valid: [N] bool.
    iou_threshold: suppression when IoU > this.
    plus_one: Caffe "+1" areas (the bottom-up rule).
    class_chunk: classes solved at once (bounds memory at chunk * N * N).

  Returns:
    [N, C] bool: box i survives the NMS of class c (invalid boxes never do).
  """
  n, c = scores.shape
  overlap = pairwise_iou(boxes, boxes, plus_one) > iou_threshold  # [N, N]
  index = jnp.arange(n)
  # Class-c order: higher score first, ties by lower index (a stable descending sort).
  s = jnp.where(valid[:, None], scores, -jnp.inf).T  # [C, N]
  chunk = min(class_chunk, c)
  pad = -(-c // chunk) * chunk - c
  s = jnp.pad(s, ((0, pad), (0, 0)), constant_values=-jnp.inf)

  def solve_chunk(sc):  # [chunk, N]
    first = (sc[:, :, None] > sc[:, None, :]) | (
        (sc[:, :, None] == sc[:, None, :]) & (index[:, None] < index[None, :]))
    return _solve(jnp.broadcast_to(valid, sc.shape), first & overlap)

  keep = lax.map(solve_chunk, s.reshape(-1, chunk, n)).reshape(-1, n)[:c]
  return keep.T
