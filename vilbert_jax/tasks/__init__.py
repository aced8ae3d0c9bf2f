"""The pretraining objective and the transfer tasks, registered by name (``config.task.name``).

Each task module holds one task's loss, predictions, metrics and evaluation; the trainer is
task-agnostic and asks ``create(config, metadata)`` for the run's task.
"""

from __future__ import annotations

from typing import Any, Mapping

import ml_collections

from vilbert_jax.tasks.base import Task
from vilbert_jax.tasks.pretraining import Pretraining
from vilbert_jax.tasks.refcoco_plus import RefCOCOPlus
from vilbert_jax.tasks.retrieval import Retrieval, ZeroShotRetrieval
from vilbert_jax.tasks.vcr import VCR
from vilbert_jax.tasks.vqa import VQA

TASKS: dict[str, type[Task]] = {t.name: t for t in (Pretraining, VQA, VCR, RefCOCOPlus,
                                                     Retrieval, ZeroShotRetrieval)}


def create(config: ml_collections.ConfigDict, metadata: Mapping[str, Any]) -> Task:
  """The task ``config.task.name`` bound to the run config and its dataset's metadata."""
  name = config.task.name
  if name not in TASKS:
    raise ValueError(f"config.task.name={name!r} is not a task; choose from {sorted(TASKS)}")
  return TASKS[name](config, metadata)


__all__ = ["TASKS", "VCR", "VQA", "Pretraining", "RefCOCOPlus", "Retrieval", "Task",
           "ZeroShotRetrieval", "create"]
