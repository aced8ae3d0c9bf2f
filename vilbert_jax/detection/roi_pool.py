"""Caffe-style RoIPool (max pooling over a 14x14 grid of integer bins) with static shapes.

Bin arithmetic of the Caffe / torchvision kernel, reproduced exactly:
* RoI edges ``x * spatial_scale`` rounded **half away from zero** (C ``round``; numpy's and
  jnp's half-to-even round changes outputs at exact .5 cells);
* RoI size ``max(end - start + 1, 1)`` cells; bin size ``size / P`` in float32; bin bounds
  ``floor(p * bin)`` and ``ceil((p + 1) * bin)`` in float32, offset by the start, clipped to
  the map; an empty bin gives 0.

Every bin is a rectangle of at most ``L`` cells per side (``L <= ceil(bin) + 1``), so each
output is the max of four lookups in a 2D sparse table (``T[a, b][y, x]`` = max over
``2^a x 2^b`` cells from (y, x)): a fixed number of gathers per output, no data-dependent
shapes, and no ``[RoIs, H, W, C]`` intermediate.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np


def round_half_away(v: jax.Array) -> jax.Array:
  """C ``round`` on float32, exact (``floor(|v| + 0.5)`` is not, near .5 in float32)."""
  a = jnp.abs(v)
  f = jnp.floor(a)
  return jnp.sign(v) * (f + (a - f >= 0.5))


def max_bin_extent(size: int, resolution: int) -> int:
  """Largest bin side, in cells, for RoIs inside a map of `size` cells."""
  return min(size, math.ceil((size + 1) / resolution) + 1)


def _sparse_table(features: jax.Array, levels_y: int, levels_x: int) -> jax.Array:
  """[H, W, C] -> [levels_y, levels_x, H, W, C]: max over 2^a x 2^b windows from (y, x)."""
  h, w, _ = features.shape
  x = jnp.pad(features, ((0, 2 ** (levels_y - 1)), (0, 2 ** (levels_x - 1)), (0, 0)),
              constant_values=-jnp.inf)
  rows = [x]
  for a in range(1, levels_y):
    step = 2 ** (a - 1)
    rows.append(jnp.maximum(rows[-1], jnp.roll(rows[-1], -step, axis=0)))
  table = []
  for r in rows:
    cols = [r]
    for b in range(1, levels_x):
      step = 2 ** (b - 1)
      cols.append(jnp.maximum(cols[-1], jnp.roll(cols[-1], -step, axis=1)))
    table.append(jnp.stack([c[:h, :w] for c in cols]))
  return jnp.stack(table)


MAX_ROI_CELLS = 4096  # Longer RoIs (> 65k pixels at stride 16) are treated as this long.


@functools.lru_cache(maxsize=None)
def _bin_offsets(resolution: int) -> tuple[np.ndarray, np.ndarray]:
  """[MAX_ROI_CELLS + 1, P] int32 floor(p * bin) and ceil((p + 1) * bin), bin = L / P.

  Computed once in numpy float32, the kernel's arithmetic. (Inside XLA, ``L / P`` with a
  constant P is rewritten to ``L * (1 / P)``, which moves some bounds by one cell.)
  """
  length = np.arange(MAX_ROI_CELLS + 1, dtype=np.float32)[:, None]
  bin_size = length / np.float32(resolution)
  p = np.arange(resolution, dtype=np.float32)[None, :]
  lo = np.floor(p * bin_size).astype(np.int32)
  hi = np.ceil((p + np.float32(1)) * bin_size).astype(np.int32)
  return lo, hi


def _bins(start: jax.Array, end: jax.Array, resolution: int, size: int):
  """Bin [lo, hi) cells along one axis: start/end [R] int32 -> ([R, P], [R, P])."""
  length = jnp.clip(end - start + 1, 1, MAX_ROI_CELLS)
  lo_table, hi_table = _bin_offsets(resolution)
  lo = jnp.asarray(lo_table)[length] + start[:, None]
  hi = jnp.asarray(hi_table)[length] + start[:, None]
  return jnp.clip(lo, 0, size), jnp.clip(hi, 0, size)


def _level(extent: jax.Array) -> jax.Array:
  """floor(log2(extent)) for extent >= 1 (0 for extent <= 1), exact on integers."""
  e = jnp.maximum(extent, 1)
  return (31 - jax.lax.clz(e.astype(jnp.int32))).astype(jnp.int32)


def roi_pool(features: jax.Array, rois: jax.Array, spatial_scale: float,
             resolution: int = 14, rois_inside_map: bool = True) -> jax.Array:
  """Caffe RoIPool of one map.

  Args:
    features: [H, W, C] feature map.
    rois: [R, 4] boxes (x1, y1, x2, y2) in input pixels.
    spatial_scale: map cells per pixel (1/16).
    resolution: output side P.
    rois_inside_map: the RoIs lie inside [0, W/scale] x [0, H/scale] (true of proposals,
      which are clipped to the image), so bins are at most ``max_bin_extent`` cells; False
      allows any box (a larger sparse table).

  Returns:
    [R, P, P, C] pooled features (same dtype as `features`).
  """
  h, w, c = features.shape
  ext_y, ext_x = ((max_bin_extent(h, resolution), max_bin_extent(w, resolution))
                  if rois_inside_map else (h, w))
  levels_y = int(math.floor(math.log2(ext_y))) + 1
  levels_x = int(math.floor(math.log2(ext_x))) + 1
  table = _sparse_table(features, levels_y, levels_x).reshape(-1, c)
  edges = round_half_away(rois.astype(jnp.float32) * jnp.float32(spatial_scale))
  edges = edges.astype(jnp.int32)
  y_lo, y_hi = _bins(edges[:, 1], edges[:, 3], resolution, h)  # [R, P]
  x_lo, x_hi = _bins(edges[:, 0], edges[:, 2], resolution, w)
  empty = (y_hi <= y_lo)[:, :, None] | (x_hi <= x_lo)[:, None, :]  # [R, P, P]
  a = jnp.minimum(_level(y_hi - y_lo), levels_y - 1)
  b = jnp.minimum(_level(x_hi - x_lo), levels_x - 1)
  ys = jnp.stack([y_lo, jnp.maximum(y_hi - 2 ** a, 0)])  # [2, R, P]
  xs = jnp.stack([x_lo, jnp.maximum(x_hi - 2 ** b, 0)])
  ys, xs = jnp.clip(ys, 0, h - 1), jnp.clip(xs, 0, w - 1)
  out = None
  for i in range(2):
    for j in range(2):
      idx = (((a[:, :, None] * levels_x + b[:, None, :]) * h + ys[i][:, :, None]) * w
             + xs[j][:, None, :])
      v = jnp.take(table, idx, axis=0)  # [R, P, P, C]
      out = v if out is None else jnp.maximum(out, v)
  return jnp.where(empty[..., None], jnp.zeros((), features.dtype), out)
