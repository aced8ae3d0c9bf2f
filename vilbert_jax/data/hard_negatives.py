"""Hard negatives for retrieval training: each image's nearest images by mean region feature."""
from __future__ import annotations

import numpy as np


def nearest_images(mean_features: np.ndarray, k: int = 100, chunk: int = 1024) -> np.ndarray:
  """Indices of the `k` nearest other images (squared L2 on mean region features).

  Args:
    mean_features: [N, D] float32, one mean region feature per image.
    k: neighbours per image (capped at N - 1).

  Returns:
    [N, min(k, N-1)] int32, nearest first; an image is never its own neighbour.
  """
  x = np.asarray(mean_features, np.float32)
  n = x.shape[0]
  k = min(k, n - 1)
  sq = (x * x).sum(axis=1)
  out = np.empty((n, k), np.int32)
  for start in range(0, n, chunk):
    d = sq[start:start + chunk, None] - 2 * x[start:start + chunk] @ x.T + sq[None]
    rows = np.arange(d.shape[0])
    d[rows, start + rows] = np.inf
    part = np.argpartition(d, k - 1, axis=1)[:, :k] if k < n - 1 else np.argsort(d, axis=1)[:, :k]
    order = np.take_along_axis(d, part, axis=1).argsort(axis=1, kind="stable")
    out[start:start + chunk] = np.take_along_axis(part, order, axis=1)
  return out
