"""Periodic evaluation during pretraining: held-out losses/accuracies, zero-shot retrieval."""

from __future__ import annotations

import collections
from typing import Any, Callable

import jax
import ml_collections
from jax.sharding import Mesh

from vilbert_jax.eval.retrieval import alignment_match_probability, score_all_pairs
from vilbert_jax.metrics.retrieval import recall_at_k
from vilbert_jax.train import data as train_data


class PretrainingEvaluator:
  """``run(params) -> {name: value}`` on the eval split; the same batches every time."""

  def __init__(self, config: ml_collections.ConfigDict, model: Any, mesh: Mesh,
               eval_step: Callable, tok: Any):
    self.config, self.model, self.mesh = config, model, mesh
    self.split = train_data.open_dataset(config, config.data.eval_split)
    self.tok = tok
    self.eval_step = jax.jit(eval_step)
    self.pool = (train_data.retrieval_pool(config, self.split, tok)
                 if config.eval.retrieval_images else None)

  def held_out(self, params: Any) -> dict[str, float]:
    """Mean metrics over ``eval.num_batches`` fixed batches (masking seeded by ``seed + 1``),
    plus the masked-word accuracy of always predicting the most frequent masked word."""
    loader = train_data.pretraining_loader(self.config, self.split, self.tok,
                                           seed=self.config.seed + 1, num_epochs=1,
                                           shuffle=False)
    sums, batches, label_counts = collections.defaultdict(float), 0, collections.Counter()
    for batch in loader:
      metrics = jax.device_get(self.eval_step(params, train_data.to_global(batch, self.mesh)))
      for k, v in metrics.items():
        sums[k] += float(v)
      labels = batch["masked_lm_labels"]
      label_counts.update(labels[labels >= 0].tolist())
      batches += 1
      if batches == self.config.eval.num_batches:
        break
    if not batches:
      raise ValueError(f"eval split {self.config.data.eval_split!r} gave no full batch of "
                       f"{self.config.batch_size}")
    out = {k: v / batches for k, v in sums.items()}
    out["masked_lm_majority_baseline"] = (label_counts.most_common(1)[0][1] /
                                          sum(label_counts.values()))
    return out

  def zero_shot_retrieval(self, params: Any) -> dict[str, float]:
    """R@1/5/10 and median rank of ranking the pool's images for each caption by P(match)."""
    scores = score_all_pairs(self.model, jax.device_get(params), self.pool.captions,
                             self.pool.images, alignment_match_probability)
    metrics = recall_at_k(scores, self.pool.image_index)
    out = {f"zero_shot/{k}": v for k, v in metrics.items()}
    out["zero_shot/chance_R@1"] = 100.0 / scores.shape[1]
    return out

  def run(self, params: Any) -> dict[str, float]:
    out = self.held_out(params)
    if self.pool is not None:
      out.update(self.zero_shot_retrieval(params))
    return out
