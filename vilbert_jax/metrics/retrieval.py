"""Caption-based image retrieval: ranks, recall@K and median rank, and a score-matrix builder.

Each caption is a query over all images of the split (Flickr30k test: 5000 captions, 1000
images); its rank is the 1-based position of its ground-truth image when the images are sorted
by decreasing score. Ties count against the caption: rank = 1 + the number of other images
scoring at least as high as the ground truth, so a model that gives every image the same
score ranks last, not first. (The original ViLBERT code sorts with an unstable ``argsort``,
which leaves the order of tied images unspecified.)
"""
from __future__ import annotations

from typing import Dict, Sequence, Tuple, Union

import numpy as np

IndexLike = Union[int, Sequence[int], np.ndarray]


def retrieval_ranks(scores: np.ndarray, gt_image: np.ndarray) -> np.ndarray:
  """1-based rank of each caption's ground-truth image.

  Args:
    scores: [num_captions, num_images] score of every (caption, image) pair, higher = better.
    gt_image: [num_captions] int index of each caption's ground-truth image.

  Returns:
    [num_captions] int64 ranks in [1, num_images].

  Raises:
    ValueError: on wrong shapes, out-of-range image indices or non-finite scores.
  """
  scores = np.asarray(scores, np.float64)
  gt_image = np.asarray(gt_image)
  if scores.ndim != 2:
    raise ValueError(f"scores must be [num_captions, num_images], got shape {scores.shape}.")
  num_captions, num_images = scores.shape
  if gt_image.shape != (num_captions,) or not np.issubdtype(gt_image.dtype, np.integer):
    raise ValueError(f"gt_image must be [{num_captions}] integers (one per caption), got "
                     f"shape {gt_image.shape} and dtype {gt_image.dtype}.")
  if np.any((gt_image < 0) | (gt_image >= num_images)):
    raise ValueError(f"gt_image holds indices outside [0, {num_images}).")
  if not np.all(np.isfinite(scores)):
    caption, image = np.argwhere(~np.isfinite(scores))[0]
    raise ValueError(f"non-finite retrieval score (first at caption {caption}, image {image}).")
  gt_scores = scores[np.arange(num_captions), gt_image]
  # Counting the ground truth itself makes this 1 + the other images at least as high.
  return np.sum(scores >= gt_scores[:, None], axis=1, dtype=np.int64)


def recall_at_k(scores: np.ndarray, gt_image: np.ndarray,
                ks: Sequence[int] = (1, 5, 10)) -> Dict[str, float]:
  """Recall@K, median and mean rank of caption-based image retrieval.

  Args:
    scores: [num_captions, num_images] score of every (caption, image) pair, higher = better.
    gt_image: [num_captions] int index of each caption's ground-truth image.
    ks: the K of the recalls to report.

  Returns:
    {"R@K": percent of captions whose rank <= K, for each K in `ks`;
     "median_rank": floor of the median rank (as the original code: floor(median(rank0) + 1)
     with 0-based rank0); "mean_rank": mean rank}. Ranks are 1-based, ties against the caption's
    favour (see `retrieval_ranks`).
  """
  ranks = retrieval_ranks(scores, gt_image)
  result = {f"R@{k}": 100.0 * float(np.mean(ranks <= k)) for k in ks}
  result["median_rank"] = float(np.floor(np.median(ranks)))
  result["mean_rank"] = float(np.mean(ranks))
  return result


class ScoreMatrixAccumulator:
  """Fills a [num_captions, num_images] score matrix block by block, then reports recalls.

  Every cell must be filled exactly once; asking for the matrix or the recalls while cells are
  missing is an error, so an incomplete evaluation can never be reported as a result.

  Usage:
    acc = ScoreMatrixAccumulator(num_captions=5000, num_images=1000)
    for caption_ids, image_ids, block in ...:  # block [len(caption_ids), len(image_ids)]
      acc.add(caption_ids, image_ids, block)
    acc.result(gt_image)  # {"R@1": ..., "R@5": ..., "R@10": ..., "median_rank": ..., ...}
  """

  def __init__(self, num_captions: int, num_images: int) -> None:
    """Creates an empty matrix.

    Args:
      num_captions: rows, the caption queries.
      num_images: columns, the candidate images.
    """
    self._scores = np.zeros((num_captions, num_images), np.float64)
    self._filled = np.zeros((num_captions, num_images), bool)

  @property
  def shape(self) -> Tuple[int, int]:
    """(num_captions, num_images)."""
    return self._scores.shape

  @property
  def num_unfilled(self) -> int:
    """Number of (caption, image) cells not filled yet."""
    return int(self._filled.size - np.count_nonzero(self._filled))

  def add(self, caption_ids: IndexLike, image_ids: IndexLike, scores: np.ndarray) -> None:
    """Fills the cells (caption_ids[i], image_ids[j]) with scores[i, j].

    Args:
      caption_ids: [c] distinct row indices (or one int).
      image_ids: [m] distinct column indices (or one int).
      scores: [c, m] scores of the block (a [c] or [m] vector when one side is a single int).

    Raises:
      ValueError: on out-of-range or repeated indices, a block of the wrong shape, non-finite
        scores, or a cell that was already filled.
    """
    rows = self._indices(caption_ids, 0, "caption")
    cols = self._indices(image_ids, 1, "image")
    block = np.asarray(scores, np.float64)
    expected = (rows.size, cols.size)
    is_vector = block.ndim <= 1 and 1 in expected and block.size == rows.size * cols.size
    if block.shape != expected and not is_vector:
      raise ValueError(f"score block has shape {block.shape}, expected {list(expected)} for "
                       f"{rows.size} captions x {cols.size} images.")
    block = block.reshape(expected)
    if not np.all(np.isfinite(block)):
      i, j = np.argwhere(~np.isfinite(block))[0]
      raise ValueError(f"non-finite score for caption {rows[i]}, image {cols[j]}.")
    cells = np.ix_(rows, cols)
    if np.any(self._filled[cells]):
      i, j = np.argwhere(self._filled[cells])[0]
      raise ValueError(f"score of caption {rows[i]}, image {cols[j]} is filled twice; each "
                       "(caption, image) pair must be scored exactly once.")
    self._scores[cells] = block
    self._filled[cells] = True

  def matrix(self) -> np.ndarray:
    """The complete [num_captions, num_images] float64 score matrix (a copy).

    Raises:
      ValueError: if any cell is unfilled; the message names the first one.
    """
    missing = self.num_unfilled
    if missing:
      caption, image = np.argwhere(~self._filled)[0]
      raise ValueError(f"retrieval score matrix is incomplete: {missing} of {self._filled.size} "
                       f"(caption, image) cells are unfilled, the first at caption {caption}, "
                       f"image {image}. Score every pair before reporting.")
    return self._scores.copy()

  def result(self, gt_image: np.ndarray, ks: Sequence[int] = (1, 5, 10)) -> Dict[str, float]:
    """`recall_at_k` of the complete matrix.

    Args:
      gt_image: [num_captions] int index of each caption's ground-truth image.
      ks: the K of the recalls to report.

    Raises:
      ValueError: if any cell is unfilled.
    """
    return recall_at_k(self.matrix(), gt_image, ks)

  def _indices(self, ids: IndexLike, axis: int, name: str) -> np.ndarray:
    """Validated [n] int64 indices along `axis` of the matrix."""
    ids = np.atleast_1d(np.asarray(ids))
    size = self._scores.shape[axis]
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
      raise ValueError(f"{name} ids must be an int or a 1-D array of ints, got shape "
                       f"{ids.shape} and dtype {ids.dtype}.")
    if np.any((ids < 0) | (ids >= size)):
      raise ValueError(f"{name} ids must lie in [0, {size}), got {ids.min()}..{ids.max()}.")
    if np.unique(ids).size != ids.size:
      raise ValueError(f"{name} ids of one block must be distinct; drop padded repeats first.")
    return ids.astype(np.int64)
