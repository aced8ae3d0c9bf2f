"""Pretraining: masked words, masked regions (KL to the detector's classes) and alignment.

Evaluation on held-out captions reports the three losses and accuracies on fixed batches, and
zero-shot retrieval over a pool of held-out images (``eval.retrieval_images``).
"""

from __future__ import annotations

import collections
from typing import Any

import jax
import jax.numpy as jnp

from vilbert_jax import losses as losses_lib
from vilbert_jax.eval.retrieval import alignment_match_probability
from vilbert_jax.model.vilbert import ViLBERTForPretraining
from vilbert_jax.tasks.base import Batch, Task
from vilbert_jax.tasks.retrieval import RetrievalEvaluator
from vilbert_jax.train import data as train_data


def pretraining_metrics(out: Any, batch: Batch, masked_losses_on_mismatched: bool = True
                        ) -> dict[str, jax.Array]:
  """The three losses, their sum, masked-word and alignment accuracy (float32 scalars)."""
  losses = losses_lib.pretraining_losses(
      out, batch["masked_lm_labels"], batch["image_label"], batch["image_target"],
      batch["alignment_label"], masked_losses_on_mismatched=masked_losses_on_mismatched)
  labels = batch["masked_lm_labels"]
  masked = labels >= 0
  correct = (jnp.argmax(out.mlm_logits, -1) == labels) & masked
  metrics = {f"loss/{k}": v for k, v in losses.items()}
  metrics["masked_lm_accuracy"] = jnp.sum(correct) / jnp.maximum(jnp.sum(masked), 1)
  metrics["alignment_accuracy"] = jnp.mean(
      jnp.argmax(out.alignment_logits, -1) == batch["alignment_label"])
  return metrics


class Pretraining(Task):
  """The three pretraining objectives on image-caption pairs (SPEC 3)."""

  name = "pretraining"
  targets = ("masked_lm_labels", "image_label", "image_target", "alignment_label")
  progress_metric = "alignment_accuracy"

  def build_model(self, cfg):
    return ViLBERTForPretraining(cfg)

  def model_kwargs(self, batch):
    # Word and region logits only where the losses read them (the decoders' cost).
    return {"masked_lm_labels": batch["masked_lm_labels"], "image_label": batch["image_label"]}

  def loss(self, out, batch):
    metrics = pretraining_metrics(out, batch)
    return metrics["loss/total"], metrics

  def train_loader(self, split, tok, *, seed):
    return train_data.pretraining_loader(self.config, split, tok, seed=seed)

  def evaluator(self, model, mesh, tok):
    return PretrainingEvaluator(self, model, mesh, tok)


class PretrainingEvaluator:
  """``run(params) -> {name: value}`` on the first eval split; the same batches every time."""

  def __init__(self, task: Pretraining, model: Any, mesh: Any, tok: Any):
    self.config, self.mesh, self.tok = task.config, mesh, tok
    self.split_name = self.config.data.eval_splits[0]
    self.split = train_data.open_dataset(self.config, self.split_name)
    loss_fn = task.loss_fn(model)
    self.eval_step = jax.jit(lambda params, batch: loss_fn(params, batch, None)[1])
    self.keys = task.device_keys
    self.retrieval = (RetrievalEvaluator(task, model, tok, alignment_match_probability,
                                         splits=(self.split_name,))
                      if self.config.eval.retrieval_images else None)

  def held_out(self, params: Any) -> dict[str, float]:
    """Mean metrics over ``eval.num_batches`` fixed batches (masking seeded by ``seed + 1``),
    plus the masked-word accuracy of always predicting the most frequent masked word."""
    loader = train_data.pretraining_loader(self.config, self.split, self.tok,
                                           seed=self.config.seed + 1, num_epochs=1,
                                           shuffle=False)
    sums, batches, label_counts = collections.defaultdict(float), 0, collections.Counter()
    iterator = iter(loader)
    for batch in iterator:
      device_batch = train_data.to_global({k: batch[k] for k in self.keys}, self.mesh)
      metrics = jax.device_get(self.eval_step(params, device_batch))
      for k, v in metrics.items():
        sums[k] += float(v)
      labels = batch["masked_lm_labels"]
      label_counts.update(labels[labels >= 0].tolist())
      batches += 1
      if batches == self.config.eval.num_batches:
        break
    train_data.close_iterator(iterator)  # its workers' prefetched batches are freed now
    if not batches:
      raise ValueError(f"eval split {self.split.name!r} gave no full batch of "
                       f"{self.config.batch_size}")
    out = {k: v / batches for k, v in sums.items()}
    out["masked_lm_majority_baseline"] = (label_counts.most_common(1)[0][1] /
                                          sum(label_counts.values()))
    return out

  def run(self, params: Any) -> dict[str, float]:
    out = self.held_out(params)
    if self.retrieval is not None:
      for key, value in self.retrieval.run(params).items():
        out[f"zero_shot/{key.split('/', 1)[1]}"] = value  # <split>/R@1 -> zero_shot/R@1
      num_images = len(self.retrieval.pools[self.split_name].images["image_feat"])
      out["zero_shot/chance_R@1"] = 100.0 / num_images
    return out

  def write_predictions(self, directory: str) -> list[str]:
    return self.retrieval.write_predictions(directory) if self.retrieval is not None else []
