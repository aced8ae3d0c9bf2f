"""Caption-based image retrieval (Flickr30k) and zero-shot retrieval.

Training (SPEC 4): each item is 4 (image, caption) pairs, the true one first: the image with
its caption, with a random caption, a random image with the caption, and the image with the
caption of one of its 100 nearest training images; ``retrieval_score`` (``Dense(d -> 1)`` on the
pooled vector) of the 4 pairs goes through a softmax cross-entropy with target 0.

Evaluation scores every caption of the split against every image (``eval.PairScorer``:
the text stream before the first co-attention layer is computed once per caption, blocks of
images are paired with it in one jitted function), ranks the images per caption and reports
R@1/5/10 and the median rank (percent / rank). Zero-shot retrieval is the same protocol with
the pretraining alignment head, score = P(match), and no training.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import jax
import numpy as np

from vilbert_jax import metrics
from vilbert_jax.eval.retrieval import PairScorer, alignment_match_probability
from vilbert_jax.model.vilbert import ViLBERTForPretraining
from vilbert_jax.tasks.base import Task, accuracy, softmax_cross_entropy
from vilbert_jax.tasks.evaluation import write_json
from vilbert_jax.train import data as train_data


def retrieval_score(out: Any) -> jax.Array:
  """Fine-tuned score of each pair: the ``retrieval_score`` head (``[pairs]``)."""
  return out.retrieval_score


def rank_images(scorer: PairScorer, params: Any, pool: train_data.RetrievalPool
                ) -> tuple[dict[str, float], np.ndarray]:
  """Recalls of ranking the pool's images for each caption, and the ``[C, I]`` scores.

  Adds ``pairs_per_s``: scored pairs per second of wall time (compilation included on the
  first call).
  """
  start = time.perf_counter()
  scores = scorer(jax.device_get(params), pool.captions, pool.images)
  seconds = time.perf_counter() - start
  result = metrics.recall_at_k(scores, pool.image_index)
  result["pairs_per_s"] = scores.size / seconds
  return result, scores


def ranking_records(scores: np.ndarray, gt_image: np.ndarray, top: int = 10) -> list[dict]:
  """Per caption: its image, the rank of that image (1 = first) and the ``top`` images."""
  ranks = metrics.retrieval_ranks(scores, gt_image)
  best = np.argsort(-scores, axis=1, kind="stable")[:, :top]
  return [{"caption_index": c, "image_index": int(gt_image[c]), "rank": int(ranks[c]),
           "top_images": best[c].tolist()} for c in range(len(scores))]


class RetrievalEvaluator:
  """Ranks every image of each eval split for every caption (``config.eval.retrieval_*``
  limit the pool: 0 = the whole split)."""

  def __init__(self, task: Task, model: Any, tok: Any, score_fn: Callable[[Any], jax.Array],
               splits: Sequence[str] = ()):
    """``splits``: the split names to evaluate (default ``config.data.eval_splits``)."""
    self.task = task
    config = task.config
    task_id = task.configured_task_id if model.cfg.task_specific_tokens else None
    self.scorer = PairScorer(model, score_fn, config.eval.caption_block, config.eval.image_block,
                             task_id)
    self.pools = {name: train_data.retrieval_pool(config, train_data.open_dataset(config, name),
                                                  tok)
                  for name in splits or config.data.eval_splits}
    self.records: dict[str, list] = {}

  def run(self, params: Any) -> dict[str, float]:
    out = {}
    for name, pool in self.pools.items():
      result, scores = rank_images(self.scorer, params, pool)
      self.records[name] = ranking_records(scores, pool.image_index)
      out.update({f"{name}/{k}": v for k, v in result.items()})
    return out

  def write_predictions(self, directory: str) -> list[str]:
    return [write_json(directory, f"{self.task.name}_{name}_rankings.json", records)
            for name, records in self.records.items()]


class Retrieval(Task):
  """Caption-based image retrieval, fine-tuned (Flickr30k and the synthetic twin)."""

  name = "retrieval"
  loader_task = "retrieval"
  outputs = ("retrieval_score",)
  targets = ("label",)
  progress_metric = "accuracy"
  task_id = 8  # 12-in-1 "TASK8" (RetrievalFlickr30k; COCO retrieval is 7)

  def loss(self, out, batch):
    logits = out.retrieval_score.reshape(-1, 4)
    loss = softmax_cross_entropy(logits, batch["label"])
    return loss, {"loss/total": loss, "loss/retrieval": loss,
                  "accuracy": accuracy(logits, batch["label"])}

  def evaluator(self, model, mesh, tok):
    del mesh
    return RetrievalEvaluator(self, model, tok, retrieval_score)


class ZeroShotRetrieval(Task):
  """Retrieval with the pretraining alignment head, straight from a pretrained checkpoint."""

  name = "zeroshot_retrieval"
  trainable = False

  def build_model(self, cfg):
    return ViLBERTForPretraining(cfg)

  def loss(self, out, batch):
    raise ValueError("zero-shot retrieval is evaluated, not trained: run --config.mode=eval "
                     "with --config.init_checkpoint=<pretrained checkpoint>")

  def evaluator(self, model, mesh, tok):
    del mesh
    return RetrievalEvaluator(self, model, tok, alignment_match_probability)
