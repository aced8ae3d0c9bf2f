"""What a task is to the trainer: a model, a loss, a training loader and an evaluator.

The trainer (``vilbert_jax.train.trainer``) knows nothing about VQA or retrieval; it asks the
run's ``Task`` for these pieces. A task is bound to the run config and to the metadata of its
dataset (e.g. the VQA answer vocabulary). Batches of multiple-choice tasks hold K options per
example (text ``[B,K,T]``; the image ``[B,R,D]`` shared by the options or ``[B,K,R,D]``, one
per option); ``forward`` runs the model on the ``B*K`` pairs.
"""

from __future__ import annotations

import abc
from typing import Any, Callable, ClassVar, Mapping, Optional, Protocol

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from vilbert_jax.config import NUM_TASK_TOKENS, ViLBERTConfig
from vilbert_jax.data.tasks import LOADER_ITEMS
from vilbert_jax.data.tfds_io import SplitData
from vilbert_jax.data.tokenizer import Tokenizer
from vilbert_jax.model.inputs import IMAGE_INPUTS, MODEL_INPUTS, TEXT_INPUTS
from vilbert_jax.model.vl_tasks import ViLBERTForVLTasks
from vilbert_jax.tasks.evaluation import ExampleEvaluator
from vilbert_jax.train import data as train_data

Batch = Mapping[str, jax.Array]


class Evaluator(Protocol):
  """Evaluates params on the task's eval splits; keeps the last predictions for writing."""

  def run(self, params: Any) -> dict[str, float]:
    """Metrics (floats) of ``params``."""

  def write_predictions(self, directory: str) -> list[str]:
    """Writes the predictions of the last ``run`` into ``directory``; returns the paths."""


def flat_model_inputs(batch: Batch) -> tuple[dict[str, jax.Array], Optional[int]]:
  """The six model inputs with any option axis folded into the batch: ``([B*K, ...], K)``.

  ``K`` is None for single-option batches (text ``[B,T]``).
  """
  inputs = {k: batch[k] for k in MODEL_INPUTS}
  if inputs["input_ids"].ndim == 2:
    return inputs, None
  b, k = inputs["input_ids"].shape[:2]
  flat = {key: inputs[key].reshape(b * k, *inputs[key].shape[2:]) for key in TEXT_INPUTS}
  shared_image = inputs["image_feat"].ndim == 3
  for key in IMAGE_INPUTS:
    x = inputs[key]
    flat[key] = jnp.repeat(x, k, axis=0) if shared_image else x.reshape(b * k, *x.shape[2:])
  return flat, k


def softmax_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Mean cross-entropy of ``logits [B, K]`` (float32) against int ``labels [B]``."""
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=-1))


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Fraction of rows whose argmax is the label."""
  return jnp.mean(jnp.argmax(logits, -1) == labels)


class Task(abc.ABC):
  """A pretraining objective or a transfer task, bound to a run config and dataset metadata.

  Subclasses set the class attributes and implement ``loss``, and either ``predict`` and
  ``score`` (per-example tasks) or ``evaluator``.
  """

  name: ClassVar[str]  # Registry key (``config.task.name``).
  loader_task: ClassVar[Optional[str]] = None  # ``data.task_loader`` key of the training data.
  outputs: ClassVar[tuple[str, ...]] = ()  # TaskOutput fields the loss and predictions read.
  targets: ClassVar[tuple[str, ...]] = ()  # Batch keys besides the model inputs the loss reads.
  progress_metric: ClassVar[str] = "accuracy"  # Shown next to the loss in the progress bar.
  trainable: ClassVar[bool] = True  # False: evaluation only (zero-shot).
  # The original 12-in-1 code's id of this task: its row of the task-token table
  # (``config.task.task_id`` overrides it; used by models with ``task_specific_tokens``).
  task_id: ClassVar[Optional[int]] = None

  def __init__(self, config: ml_collections.ConfigDict, metadata: Mapping[str, Any]):
    self.config = config
    self.metadata = dict(metadata)

  def build_model(self, cfg: ViLBERTConfig) -> nn.Module:
    """The task model: the released downstream model, computing only ``outputs``."""
    return ViLBERTForVLTasks(cfg, self.config.task.head_variant,
                             num_answers=self.num_answers, outputs=self.outputs)

  @property
  def num_answers(self) -> int:
    """Size of the model's VQA head (``config.task.num_answers``; VQA: its vocabulary)."""
    return int(self.config.task.num_answers)

  def loader_options(self) -> dict[str, Any]:
    """Extra arguments of this task's ``data.task_loader``."""
    return {}

  def task_token_row(self, key: str, default: Optional[int]) -> int:
    """``config.task.<key>`` if set (non-zero), else ``default``; checked against the table."""
    task_id = int(self.config.task.get(key, 0)) or default
    if task_id is None:
      raise ValueError(f"task {self.name!r} has no 12-in-1 task id: set --config.task.{key} "
                       "to use a model with task tokens")
    if not 0 < task_id < NUM_TASK_TOKENS:
      raise ValueError(f"config.task.{key}={task_id} is not a task-token row (1 to "
                       f"{NUM_TASK_TOKENS - 1})")
    return task_id

  @property
  def configured_task_id(self) -> int:
    """The task-token row this run uses: ``config.task.task_id``, 0 = the class's ``task_id``."""
    return self.task_token_row("task_id", self.task_id)

  def task_ids(self, shape: tuple[int, ...]) -> jax.Array:
    """Task ids of a batch whose text is ``[*shape, T]`` (``[B]`` or ``[B, K]`` options)."""
    return jnp.full(shape, self.configured_task_id, jnp.int32)

  def forward(self, model: nn.Module, params: Any, batch: Batch,
              rng: Optional[jax.Array]) -> Any:
    """Model output on the batch's (flattened) pairs; ``rng`` None = no dropout.

    A model with task tokens gets ``task_ids`` in the order of the flattened pairs: the
    batch's own ``task_ids`` (``[B]`` or ``[B, K]``) if it has them, else ``task_ids(...)``.
    """
    inputs, _ = flat_model_inputs(batch)
    kwargs = self.model_kwargs(batch)
    if model.cfg.task_specific_tokens:
      ids = batch.get("task_ids")
      if ids is None:
        ids = self.task_ids(batch["input_ids"].shape[:-1])
      kwargs["task_ids"] = jnp.reshape(ids, -1)
    return model.apply({"params": params}, *(inputs[k] for k in MODEL_INPUTS),
                       deterministic=rng is None,
                       rngs=None if rng is None else {"dropout": rng}, **kwargs)

  def model_kwargs(self, batch: Batch) -> dict[str, jax.Array]:
    """Keyword arguments of the model call taken from the batch (none by default)."""
    del batch
    return {}

  @abc.abstractmethod
  def loss(self, out: Any, batch: Batch) -> tuple[jax.Array, dict[str, jax.Array]]:
    """``(total loss, metrics)``; metrics hold ``loss/total`` and ``progress_metric``."""

  def train_loader(self, split: SplitData, tok: Tokenizer, *, seed: int):
    """Endless shuffled training batches of this process."""
    return train_data.task_loader(self.config, split, self.loader_task, tok, seed=seed,
                                  **self.loader_options())

  def evaluator(self, model: nn.Module, mesh: Any, tok: Tokenizer) -> Evaluator:
    """The evaluator of ``config.data.eval_splits``: by default every item predicted once
    (``ExampleEvaluator``, reading the task's ``predict`` and ``score``)."""
    return ExampleEvaluator(self, model, mesh, tok)

  def loss_fn(self, model: nn.Module) -> Callable:
    """``loss_fn(params, batch, rng) -> (loss, metrics)`` for ``train.step``."""
    return lambda params, batch, rng: self.loss(self.forward(model, params, batch, rng), batch)

  @property
  def train_items(self) -> str:
    """The split's task whose items are the training examples (sizes an epoch)."""
    return LOADER_ITEMS[self.loader_task] if self.loader_task else "captions"

  @property
  def device_keys(self) -> tuple[str, ...]:
    """The batch keys a train step needs on the devices."""
    return MODEL_INPUTS + self.targets
