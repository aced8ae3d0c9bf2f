"""Evaluating per-example tasks (VQA, VCR, RefCOCO+): predict every item of a split, once.

Every process reads its shard of the split in order (no shuffling, nothing dropped); batches
are padded to a fixed size with ``valid = 0`` rows so the prediction step compiles once, and all
processes run the same number of steps. Predictions come back to every host, keyed by
``example_id`` (the item's flat index in the split), so a metric sees each item exactly once.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Callable, Iterator

import jax
import numpy as np
import tqdm
from jax.experimental import multihost_utils

from vilbert_jax.data.tasks import LOADER_ITEMS
from vilbert_jax.data.tfds_io import SplitData
from vilbert_jax.data.tokenizer import Tokenizer
from vilbert_jax.train import data as train_data

Predictions = dict[str, np.ndarray]


def padded_batches(loader: Any, batch_size: int, num_batches: int
                   ) -> Iterator[dict[str, np.ndarray]]:
  """``num_batches`` batches of exactly ``batch_size`` rows with a ``valid [B]`` int32 key.

  Rows past the loader's end are zeros with ``valid = 0``; a loader that runs dry early
  yields all-padding batches (another process may still have items).
  """
  iterator, template = iter(loader), None
  for _ in range(num_batches):
    batch = next(iterator, None)
    if batch is None:
      if template is None:
        raise ValueError("this process has no evaluation item at all; use fewer processes or "
                         "a larger eval split")
      batch = {k: v[:0] for k, v in template.items()}
    template = batch
    n = len(batch["example_id"])
    out = {k: np.concatenate([v, np.zeros((batch_size - n,) + v.shape[1:], v.dtype)])
           for k, v in batch.items()}
    out["valid"] = (np.arange(batch_size) < n).astype(np.int32)
    yield out
  train_data.close_iterator(iterator)  # workers and their prefetched batches freed now


def predict_split(predict_step: Callable, params: Any, split: SplitData, task: Any,
                  tok: Tokenizer, mesh: Any, desc: str = "eval") -> Predictions:
  """``predict_step(params, batch) -> {name: [B, ...]}`` over every item of ``split``.

  Returns host arrays of the valid rows sorted by ``example_id`` (which they include).
  """
  global_batch = eval_batch_size(task.config)
  local_batch = train_data.per_process_batch_size(global_batch)
  total = split.task_items(LOADER_ITEMS[task.loader_task]).total
  per_process = math.ceil(total / jax.process_count())
  num_batches = math.ceil(per_process / local_batch)
  loader = train_data.task_loader(task.config, split, task.loader_task, tok, seed=0,
                                  shuffle=False, num_epochs=1, drop_remainder=False,
                                  batch_size=global_batch, **task.loader_options())
  keys = task.device_keys
  parts = []
  for batch in tqdm.tqdm(padded_batches(loader, local_batch, num_batches), total=num_batches,
                         desc=desc, leave=False, disable=jax.process_index() != 0):
    device_batch = train_data.to_global({k: batch[k] for k in keys + ("example_id", "valid")},
                                        mesh)
    out = predict_step(params, device_batch)
    out = {**out, "example_id": device_batch["example_id"], "valid": device_batch["valid"]}
    parts.append(multihost_utils.process_allgather(out, tiled=True))
  merged = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
  keep = merged.pop("valid").astype(bool)
  order = np.argsort(merged["example_id"][keep], kind="stable")
  out = {k: v[keep][order] for k, v in merged.items()}
  if len(out["example_id"]) != total or np.any(out["example_id"] != np.arange(total)):
    raise RuntimeError(f"evaluation saw {len(out['example_id'])} of {total} items of "
                       f"{split.name}; every item must be predicted exactly once")
  return out


def eval_batch_size(config: Any) -> int:
  """The global evaluation batch (``eval.batch_size``, 0 = the training batch)."""
  return int(config.eval.batch_size or config.batch_size)


def write_json(directory: str, name: str, value: Any) -> str:
  """Writes ``value`` as JSON to ``directory/name`` (process 0 only); returns the path."""
  path = os.path.join(directory, name)
  if jax.process_index() == 0:
    os.makedirs(directory, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
      json.dump(value, f)
  return path


class ExampleEvaluator:
  """Evaluator of a per-example task over ``config.data.eval_splits``.

  The task supplies ``predict(out, batch) -> {name: [B, ...]}`` (jittable) and
  ``score(predictions, split) -> (metrics, prediction records)`` (host); metrics are reported
  as ``<split>/<name>``, predictions written as ``<task>_<split>_predictions.json``.
  """

  def __init__(self, task: Any, model: Any, mesh: Any, tok: Tokenizer):
    self.task, self.mesh, self.tok = task, mesh, tok
    self.splits = {name: train_data.open_dataset(task.config, name)
                   for name in task.config.data.eval_splits}
    self.predict_step = jax.jit(
        lambda params, batch: task.predict(task.forward(model, params, batch, None), batch))
    self.records: dict[str, list] = {}

  def run(self, params: Any) -> dict[str, float]:
    metrics = {}
    for name, split in self.splits.items():
      predictions = predict_split(self.predict_step, params, split, self.task, self.tok,
                                  self.mesh, desc=f"eval {name}")
      split_metrics, self.records[name] = self.task.score(predictions, split)
      metrics.update({f"{name}/{k}": v for k, v in split_metrics.items()})
    return metrics

  def write_predictions(self, directory: str) -> list[str]:
    return [write_json(directory, f"{self.task.name}_{name}_predictions.json", records)
            for name, records in self.records.items()]
