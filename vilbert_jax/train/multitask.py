"""Multi-task training as in 12-in-1 (Lu et al., CVPR 2020): several tasks, one shared model.

With ``model.task_specific_tokens`` every task's batches carry its own task id (its 12-in-1
id, or the entry's ``task_id``): ``Task.forward`` inserts that task-token row.

The schedule of the original (``train_tasks.py`` of facebookresearch/vilbert-multi-task), as
this module runs it (``config.multitask.mode = "per_task"``):

* Every iteration visits the tasks in ``multitask.order``, one batch each, and applies one
  optimiser update per task right after that task's backward pass: the losses are never
  summed, and the tasks share the parameters and the Adam moments, so the second task of an
  iteration sees the parameters the first one just changed.
* Each task's loss is multiplied by ``loss_weight x its learning rate / the smallest task
  learning rate`` (the original's ``loss_scale``; ``loss_weight`` is 1 there).
* Learning rates: every parameter gets the smallest task rate (the original's ``base_lr``),
  except the heads whose original names contain ``vil_`` (``vil_prediction``,
  ``vil_prediction_gqa``, ``vil_logit``, ``vil_binary_prediction``, ``vil_tri_prediction``),
  which get ``multitask.head_learning_rate`` (1e-4). Our parameter paths are mapped to the
  original names by the converter's rules (``convert.mapping.task_head_rules``), so the
  1e-4 group is exactly ``vqa_head/``, ``gqa_head/``, ``pair_head/``, ``entailment_head/`` and
  ``retrieval_head/``; the grounding and text-token heads (``vision_logit``,
  ``linguisic_logit``) keep the base rate, as in the original.
* Optimiser: the original's ``AdamW(correct_bias=False)`` of pytorch_transformers: Adam
  moments without bias correction, ``p -= lr * m / (sqrt(v) + eps)`` with eps 1e-6, then
  the decoupled decay ``p -= lr * 0.01 * p`` on the updated ``p`` for every parameter but
  biases and LayerNorm (``optim.decay_mask(..., "standard")``); no gradient clipping.
* Schedule: warmup-linear (``optim.make_schedule("warmup_linear_decay")``, warmup
  ``optimizer.warmup_fraction`` of the run) over ``num_epochs`` passes of the largest task
  (``num_train_steps > 0`` sets the number of iterations instead). It advances once per
  iteration in which at least one task trains, before that iteration's first update (the
  original steps its ``WarmupLinearSchedule`` before ``optimizer.step()`` of the first task).
* Data: each task cycles through its own training split with its own shuffled, endless
  loader (reshuffled at each pass); a pass of task t is ``len(split) // batch_t`` batches.
* Evaluation of task t after the iteration whose 0-based index i > 0 is a multiple of its pass
  length, and after the last iteration (the original's ``iterId % task_num_iters``); its
  score (``metric`` of the task entry, identical on every host: the evaluators gather all
  predictions and the score is broadcast from process 0) drives the task's stop-and-go
  controller (``train.stop_and_go``), which decides whether the task trains at every
  iteration or only every ``train_iter_gap``-th. All controllers reset after the 0-based
  epochs in ``stop_and_go.reset_after_epochs``.

``mode = "summed"`` is the pod variant: one update per iteration on the sum of the weighted
losses of the tasks that train in it (one compiled step for all tasks; a stopped task enters
with weight 0 at the iterations it skips, so the step never recompiles).

Compilation and memory: ``per_task`` compiles one train step per task (its batch shapes and
loss), once, and reuses it every iteration. The train state (parameters + Adam moments, one
copy) is donated to each step, so all the steps update the same buffers in place; a step's
activations and gradients exist only while it runs.

Checkpoints (``workdir/checkpoints``) hold the train state, every task's data-iterator state
and, as JSON, the iteration, the schedule's step, each task's update count and the
controllers' states: a resumed run takes the same batches, dropout keys and decisions.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import pathlib
import shutil
import time
from typing import Any, Callable, Mapping, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.experimental import multihost_utils

from vilbert_jax import sharding
from vilbert_jax import tasks
from vilbert_jax.config import ViLBERTConfig
from vilbert_jax.convert.mapping import task_head_rules
from vilbert_jax.params_io import ModelSpec, load_spec, save_params
from vilbert_jax.train import data as train_data
from vilbert_jax.train import optim
from vilbert_jax.train.checkpoints import Checkpoints, StopRequest, abstract_like
from vilbert_jax.train.initialization import initial_params
from vilbert_jax.train.metric_writers import MetricWriter
from vilbert_jax.train.state import TrainState, create_train_state, with_params
from vilbert_jax.train.stop_and_go import StopAndGo, StopAndGoConfig
from vilbert_jax.train import trainer
from vilbert_jax.train.trainer import NonFiniteLossError, model_config, sample_inputs

log = logging.getLogger(__name__)

MODES = ("per_task", "summed")
TASKS_FILE = "tasks.json"  # In export/: what each task of the multi-task model reads.


@dataclasses.dataclass(frozen=True)
class TaskSpec:
  """One task of a multi-task run (an entry of ``config.multitask.tasks``)."""

  key: str  # Its name in the run (metrics prefix, checkpoint item): "vqa", "refcoco_plus", ...
  name: str  # Registered task (``vilbert_jax.tasks.TASKS``).
  dataset: str  # TFDS dataset name.
  train_split: str
  eval_splits: tuple[str, ...]
  batch_size: int  # Global training batch.
  eval_batch_size: int  # Global evaluation batch.
  max_text_len: int  # Text tokens.
  num_visual_tokens: int  # Regions + IMG.
  learning_rate: float  # The task's rate; the loss is scaled by it over the smallest one.
  loss_weight: float  # Extra loss factor (1 in the original).
  metric: str  # Evaluation metric read by stop-and-go, e.g. "validation/accuracy".
  task_id: int  # Task-token row of its batches (0: the task's own 12-in-1 id).


def task_specs(config: ml_collections.ConfigDict) -> list[TaskSpec]:
  """The tasks of ``config.multitask`` in ``multitask.order``."""
  mt = config.multitask
  order = tuple(mt.order)
  if not order:
    raise ValueError("config.multitask.order is empty: list the tasks to train")
  unknown = [k for k in order if k not in mt.tasks]
  if unknown:
    raise ValueError(f"multitask.order names {unknown}, not in multitask.tasks "
                     f"({sorted(mt.tasks.keys())})")
  if len(set(order)) != len(order):
    raise ValueError(f"multitask.order repeats a task: {order}")
  specs = []
  for key in order:
    t = mt.tasks[key]
    if t.name not in tasks.TASKS or not tasks.TASKS[t.name].trainable:
      raise ValueError(f"multitask.tasks.{key}.name={t.name!r} is not a trainable task; "
                       f"choose from {sorted(n for n, c in tasks.TASKS.items() if c.trainable)}")
    specs.append(TaskSpec(key, t.name, t.dataset, t.train_split, tuple(t.eval_splits),
                          int(t.batch_size), int(t.eval_batch_size or t.batch_size),
                          int(t.max_text_len), int(t.num_visual_tokens),
                          float(t.learning_rate), float(t.loss_weight), t.metric,
                          int(t.get("task_id", 0))))
  for s in specs:
    if s.learning_rate <= 0 or s.loss_weight <= 0:
      raise ValueError(f"multitask.tasks.{s.key}: learning_rate and loss_weight must be > 0")
  return specs


def loss_scales(specs: Sequence[TaskSpec]) -> list[float]:
  """Per task: ``loss_weight x learning_rate / min(learning rates)``."""
  base = min(s.learning_rate for s in specs)
  return [s.loss_weight * s.learning_rate / base for s in specs]


def single_task_config(config: ml_collections.ConfigDict, spec: TaskSpec,
                       num_answers: Optional[int] = None) -> ml_collections.ConfigDict:
  """The config one task of the run sees (its task, data, lengths and batches); everything
  else (model, tokenizer, data directory, evaluation settings, seed) is the run's.
  ``num_answers``: the shared VQA head size (every task's model must have the same heads)."""
  c = ml_collections.ConfigDict(config.to_dict())
  del c["multitask"]
  c.task.name = spec.name
  c.data.name = spec.dataset
  c.data.train_split = spec.train_split
  c.data.eval_splits = spec.eval_splits
  c.data.max_text_len = spec.max_text_len
  c.data.num_visual_tokens = spec.num_visual_tokens
  c.batch_size = spec.batch_size
  c.eval.batch_size = spec.eval_batch_size
  c.task.task_id = spec.task_id
  if num_answers is not None:
    c.task.num_answers = num_answers
  return c


def head_learning_rate_pattern(head_variant: str) -> str:
  """Regex of our parameter paths whose original keys contain ``vil_`` (see the module
  docstring), from the converter's head rules."""
  prefixes = sorted({r.flax_path[0] for r in task_head_rules(head_variant) if "vil_" in r.key})
  return r"^(" + "|".join(prefixes) + r")/"


def learning_rates(params: Any, base_lr: float, head_lr: float, head_variant: str) -> Any:
  """A tree like ``params``: each parameter's peak learning rate."""
  return optim.tree_by_regex(params, [(head_learning_rate_pattern(head_variant), head_lr)],
                             base_lr)


@dataclasses.dataclass(frozen=True)
class Optimizer:
  """The original's multi-task AdamW (see the module docstring), with the per-parameter
  peak rates, the decay mask and the warmup-linear factor."""

  moments: Any  # optax transformation: Adam moments without bias correction.
  lr: Any  # Tree of peak learning rates.
  decay: Any  # Tree of bools: decoupled weight decay applies.
  weight_decay: float
  factor: Callable[[jax.Array], jax.Array]  # Schedule step -> multiplier of the peak rates.

  def apply(self, params: Any, opt_state: Any, grads: Any, schedule_step: jax.Array):
    """``(params, opt_state)`` after one update; ``schedule_step`` is 1 at the first one."""
    updates, opt_state = self.moments.update(grads, opt_state)
    factor = self.factor(schedule_step)

    def one(p, u, lr, decay):
      p = p - (lr * factor) * u
      return p - (lr * factor * self.weight_decay) * p if decay else p
    return jax.tree.map(one, params, updates, self.lr, self.decay), opt_state


def make_optimizer(config: ml_collections.ConfigDict, params: Any, specs: Sequence[TaskSpec],
                   total_iterations: int) -> Optimizer:
  opt = config.optimizer
  moments = optim.scale_by_adam_without_bias_correction(opt.b1, opt.b2, opt.eps)
  base_lr = min(s.learning_rate for s in specs)
  lr = learning_rates(params, base_lr, config.multitask.head_learning_rate,
                      config.task.head_variant)
  factor = optim.make_schedule("warmup_linear_decay", 1.0, total_iterations,
                               opt.warmup_fraction)
  return Optimizer(moments, lr, optim.decay_mask(params, "standard"), float(opt.weight_decay),
                   factor)


def _dropout_key(seed: int, task_index: int, count: jax.Array) -> jax.Array:
  return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), task_index), count)


def make_task_step(loss_fn: Callable, scale: float, optimizer: Optimizer, seed: int,
                   task_index: int) -> Callable:
  """``step(state, batch, schedule_step, task_update) -> (state, metrics)``: one update on
  ``scale x`` the task's loss; dropout key from (seed, task, the task's update count)."""
  def scaled(params, batch, rng):
    loss, metrics = loss_fn(params, batch, rng)
    return loss * scale, metrics
  grad_fn = jax.value_and_grad(scaled, has_aux=True)

  def step(state: TrainState, batch, schedule_step, task_update):
    (_, metrics), grads = grad_fn(state.params, batch, _dropout_key(seed, task_index,
                                                                   task_update))
    params, opt_state = optimizer.apply(state.params, state.opt_state, grads, schedule_step)
    metrics = {**metrics, "grad_norm": optax.global_norm(grads),
               "learning_rate_factor": optimizer.factor(schedule_step)}
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics
  return step


def make_summed_step(loss_fns: Sequence[Callable], scales: Sequence[float],
                     optimizer: Optimizer, seed: int) -> Callable:
  """``step(state, batches, schedule_step, active [T], iteration) -> (state, [metrics])``:
  one update on ``sum_t active_t x scale_t x loss_t``."""
  def total(params, batches, active, iteration):
    losses, metrics = [], []
    for t, (fn, scale, batch) in enumerate(zip(loss_fns, scales, batches)):
      loss, m = fn(params, batch, _dropout_key(seed, t, iteration))
      losses.append(active[t] * scale * loss)
      metrics.append(m)
    return sum(losses), metrics
  grad_fn = jax.value_and_grad(total, has_aux=True)

  def step(state: TrainState, batches, schedule_step, active, iteration):
    (_, metrics), grads = grad_fn(state.params, batches, active, iteration)
    params, opt_state = optimizer.apply(state.params, state.opt_state, grads, schedule_step)
    extra = {"grad_norm": optax.global_norm(grads),
             "learning_rate_factor": optimizer.factor(schedule_step)}
    return (state.replace(step=state.step + 1, params=params, opt_state=opt_state),
            [{**m, **extra} for m in metrics])
  return step


def evaluation_due(iteration: int, pass_length: int, total_iterations: int) -> bool:
  """Whether a task whose pass is ``pass_length`` iterations is evaluated after 0-based
  ``iteration``: multiples of its pass (not 0), and the last iteration."""
  return (iteration != 0 and iteration % pass_length == 0) or iteration == total_iterations - 1


@dataclasses.dataclass
class MultiTaskRun:
  """The pieces of a multi-task run, built once by ``setup``."""

  config: ml_collections.ConfigDict
  cfg: ViLBERTConfig
  specs: list[TaskSpec]
  task_configs: list[ml_collections.ConfigDict]
  tasks: list[tasks.Task]
  models: list[nn.Module]  # Per task: the shared model computing that task's outputs.
  mesh: Any
  optimizer: Optimizer
  scales: list[float]
  pass_lengths: list[int]  # Iterations per pass over each task's training data.
  epoch_length: int  # Iterations per epoch: the largest pass.
  total_iterations: int
  state: TrainState
  shardings: TrainState

  def jit(self, fn: Callable, batch_args: int) -> Callable:
    """``fn(state, *args)`` jitted with the state in its shardings and donated."""
    def with_rules(state, *args):
      with nn.logical_axis_rules(sharding.DEFAULT_RULES):
        return fn(state, *args)
    return jax.jit(with_rules, in_shardings=(self.shardings,) + (None,) * batch_args,
                   out_shardings=(self.shardings, None), donate_argnums=0)

  def task_steps(self) -> list[Callable]:
    """One jitted per-task step each (``per_task`` mode)."""
    return [self.jit(make_task_step(task.loss_fn(model), scale, self.optimizer,
                                    self.config.seed, t), 3)
            for t, (task, model, scale) in enumerate(zip(self.tasks, self.models,
                                                         self.scales))]

  def summed_step(self) -> Callable:
    """The one jitted step over all tasks (``summed`` mode)."""
    return self.jit(make_summed_step([t.loss_fn(m) for t, m in zip(self.tasks, self.models)],
                                     self.scales, self.optimizer, self.config.seed), 4)


def setup(config: ml_collections.ConfigDict, metadata: Sequence[Mapping[str, Any]],
          num_examples: Sequence[int], devices: Optional[Sequence[jax.Device]] = None
          ) -> MultiTaskRun:
  """Tasks, shared model, mesh, optimiser and the sharded initial state; ``metadata`` and
  ``num_examples`` (training items) per task, in ``multitask.order``."""
  if config.multitask.mode not in MODES:
    raise ValueError(f"multitask.mode={config.multitask.mode!r}: choose from {MODES}")
  specs = task_specs(config)
  cfg = model_config(config)
  probe = [tasks.create(single_task_config(config, s), m) for s, m in zip(specs, metadata)]
  vqa = [t for t in probe if t.name == "vqa"]
  num_answers = (vqa[0].num_answers if vqa else
                 _checkpoint_answers(config.init_checkpoint) or int(config.task.num_answers))
  if any(t.num_answers != num_answers for t in vqa):
    raise ValueError("the VQA tasks of a multi-task run must share one answer vocabulary")
  task_configs = [single_task_config(config, s, num_answers) for s in specs]
  task_objs = [tasks.create(c, m) for c, m in zip(task_configs, metadata)]
  models = [t.build_model(cfg) for t in task_objs]
  pass_lengths = []
  for s, n in zip(specs, num_examples):
    if n < s.batch_size:
      raise ValueError(f"task {s.key}: {n} training items, fewer than its batch {s.batch_size}")
    pass_lengths.append(n // s.batch_size)
  epoch_length = max(pass_lengths)
  total = (int(config.num_train_steps) if config.num_train_steps > 0
           else int(config.num_epochs * epoch_length))
  mesh = sharding.make_mesh(**config.mesh.to_dict(), devices=devices)
  inputs = sample_inputs(cfg, specs[0].max_text_len, specs[0].num_visual_tokens, batch=2)
  extra = {"task_ids": jnp.ones((2,), jnp.int32)} if cfg.task_specific_tokens else {}
  init_model = models[0].clone(outputs=())  # every head
  init_fn = lambda rng: init_model.init(rng, *inputs, **extra)["params"]  # noqa: E731
  abstract_params = nn.unbox(jax.eval_shape(init_fn, jax.random.key(0)))
  optimizer = make_optimizer(config, abstract_params, specs, total)
  state, shardings = create_train_state(init_fn, optimizer.moments, jax.random.key(config.seed),
                                        mesh, sharding.DEFAULT_RULES)
  return MultiTaskRun(config, cfg, specs, task_configs, task_objs, models, mesh, optimizer,
                      loss_scales(specs), pass_lengths, epoch_length, total, state, shardings)


def train_iteration(run: MultiTaskRun, steps: Sequence[Callable], state: TrainState,
                    iteration: int, schedule_step: int, active: Sequence[bool],
                    task_updates: list[int], next_batch: Callable[[int], Any],
                    last_batches: list, histories: list[list],
                    placeholder_batch: Optional[Callable[[int], Any]] = None) -> TrainState:
  """One iteration: ``per_task`` runs ``steps[t]`` for each active task t in order (each its
  own update); ``summed`` runs ``steps[0]`` once on every task's batch (a task that skips
  this iteration enters with weight 0 and its last batch, or ``placeholder_batch(t)`` if it
  has none yet, e.g. right after a resume: its own data stream is not advanced).
  ``next_batch(t)``: task t's next device batch. Updates ``task_updates``, ``last_batches``
  and ``histories`` (metrics per task) in place; returns the new state."""
  if run.config.multitask.mode == "summed":
    batches = []
    for t in range(len(run.specs)):
      if active[t]:
        last_batches[t] = next_batch(t)
      elif last_batches[t] is None:
        last_batches[t] = (placeholder_batch or next_batch)(t)
      batches.append(last_batches[t])
    state, metrics = steps[0](state, batches, np.int32(schedule_step),
                              np.asarray(active, np.float32), np.int32(iteration))
    for t in range(len(run.specs)):
      if active[t]:
        histories[t].append(metrics[t])
        task_updates[t] += 1
    return state
  for t in range(len(run.specs)):
    if active[t]:
      state, metrics = steps[t](state, next_batch(t), np.int32(schedule_step),
                                np.int32(task_updates[t]))
      histories[t].append(metrics)
      task_updates[t] += 1
  return state


def training_splits(config: ml_collections.ConfigDict) -> tuple[list[Any], list[int]]:
  """Each task's training split (built first if synthetic) and its number of items."""
  splits, counts = [], []
  for s in task_specs(config):
    c = single_task_config(config, s)
    split = train_data.open_dataset(c, s.train_split)
    splits.append(split)
    counts.append(split.task_items(tasks.create(c, split.metadata).train_items).total)
  return splits, counts


def resets_after(iterations_done: int, epoch_length: int, epochs: Sequence[int]) -> bool:
  """Whether the controllers reset now: an epoch just ended and its 0-based index is listed
  (the original's ``if epochId in lr_reduce_list`` after each epoch)."""
  return iterations_done % epoch_length == 0 and iterations_done // epoch_length - 1 in epochs


def _checkpoint_answers(init_checkpoint: str) -> Optional[int]:
  """The VQA head size of the ``init_checkpoint`` model, if it says (a run without VQA then
  keeps that head, e.g. when fine-tuning RefCOCO+ alone from a multi-task model)."""
  if not init_checkpoint:
    return None
  directory = pathlib.Path(init_checkpoint).expanduser()
  for candidate in (directory, directory / "export"):
    if (candidate / "model.json").exists():
      return load_spec(candidate).num_answers
  return None


def same_on_every_host(values: Sequence[float]) -> list[float]:
  """``values`` as process 0 has them (the decisions then cannot differ between hosts)."""
  if jax.process_count() == 1:
    return [float(v) for v in values]
  # As 32-bit words: without jax_enable_x64 a float64 array would be narrowed to float32.
  words = np.asarray(values, np.float64).view(np.uint32)
  out = np.asarray(multihost_utils.broadcast_one_to_all(words), np.uint32).view(np.float64)
  return [float(v) for v in out]


class Controllers:
  """Stop-and-go controllers of all tasks, plus the run's counters, as checkpointed JSON."""

  def __init__(self, keys: Sequence[str], config: StopAndGoConfig):
    self.keys = list(keys)
    self.config = config
    self.by_key = {k: StopAndGo(config) for k in keys}

  def trains(self, iteration: int) -> list[bool]:
    return [self.by_key[k].trains_at(iteration) for k in self.keys]

  def step(self, key: str, score: float) -> None:
    if self.config.enabled:
      self.by_key[key].step(score)

  def reset_all(self) -> None:
    for c in self.by_key.values():
      c.reset()

  def state_dict(self) -> dict[str, Any]:
    return {k: c.state_dict() for k, c in self.by_key.items()}

  def load_state_dict(self, state: Mapping[str, Any]) -> None:
    if set(state) != set(self.keys):
      raise ValueError(f"the checkpoint's stop-and-go controllers are for {sorted(state)}, "
                       f"this run trains {sorted(self.keys)}")
    for k, s in state.items():
      self.by_key[k].load_state_dict(s)


def stop_and_go_config(config: ml_collections.ConfigDict) -> StopAndGoConfig:
  fields = config.multitask.stop_and_go.to_dict()
  fields["reset_after_epochs"] = tuple(fields["reset_after_epochs"])
  return StopAndGoConfig(**fields)


def _check_finite(key: str, history: Sequence[Mapping[str, float]], iteration: int) -> None:
  for metrics in history:
    if not math.isfinite(float(metrics["loss/total"])):
      terms = {k: float(v) for k, v in metrics.items() if k.startswith("loss/")}
      raise NonFiniteLossError(f"non-finite loss of task {key} by iteration {iteration}: "
                               f"{terms}; stopping (lower the learning rate or check the data)")


def _mean(history: Sequence[Mapping[str, Any]]) -> dict[str, float]:
  return {k: float(np.mean([h[k] for h in history])) for k in history[0]}


def export_multitask(directory: pathlib.Path, params: Any, run: MultiTaskRun) -> pathlib.Path:
  """``directory``: params + ``model.json`` (every head), and ``tasks.json`` describing each
  task (the input of ``--config.init_checkpoint`` for single-task fine-tuning)."""
  if jax.process_index() == 0 and directory.exists():
    shutil.rmtree(directory)
  multihost_utils.sync_global_devices("multitask export: old directory removed")
  save_params(directory, jax.device_get(params), ModelSpec.of(run.models[0]))
  if jax.process_index() == 0:
    (directory / TASKS_FILE).write_text(json.dumps({
        s.key: {"task": s.name, "answer_vocab": t.metadata.get("answer_vocab"),
                "max_text_len": s.max_text_len, "num_visual_tokens": s.num_visual_tokens}
        for s, t in zip(run.specs, run.tasks)}, indent=2))
  return directory


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains the tasks of ``config.multitask`` together; returns the last evaluation of each
  (``<task>/<split>/<metric>``). Writes ``checkpoints/`` (resumable), ``metrics.jsonl`` and
  TensorBoard events (per task, with each task's stop/go state), ``eval_metrics.json`` and
  ``export/``."""
  workdir_path = pathlib.Path(workdir).expanduser().absolute()
  tok = train_data.tokenizer(config)
  specs = task_specs(config)
  splits, num_examples = training_splits(config)
  run = setup(config, [sp.metadata for sp in splits], num_examples)
  iterators = {s.key: iter(t.train_loader(sp, tok, seed=config.seed + i))
               for i, (s, t, sp) in enumerate(zip(specs, run.tasks, splits))}
  controllers = Controllers([s.key for s in specs], stop_and_go_config(config))
  checkpoints = Checkpoints(workdir_path / "checkpoints", keep=config.keep_checkpoints)
  counters = {"iteration": 0, "schedule_step": 0, "task_updates": [0] * len(specs)}
  state = run.state
  if checkpoints.latest_step() is not None:
    state = checkpoints.restore(abstract_like(state, run.shardings), iterators)
    extra = checkpoints.extra()
    controllers.load_state_dict(extra["controllers"])
    counters = {k: extra[k] for k in counters}
    log.info("resumed at iteration %d", counters["iteration"])
  else:
    if config.init.required and not config.init_checkpoint:
      raise ValueError("multi-task training fine-tunes a pretrained ViLBERT: set "
                       "--config.init_checkpoint (a pretraining workdir or a converted "
                       "checkpoint), or choose the no_pretraining variant")
    params, report = initial_params(jax.device_get(state.params), run.cfg,
                                    config.init.bert_checkpoint, config.init_checkpoint)
    if report is not None:
      if jax.process_index() == 0:
        print(report.summary())
      state = with_params(state, params, run.shardings)

  summed = config.multitask.mode == "summed"
  steps = [run.summed_step()] if summed else run.task_steps()
  evaluators = [t.evaluator(m, run.mesh, tok) for t, m in zip(run.tasks, run.models)]
  writer = MetricWriter(workdir_path)
  is_main = jax.process_index() == 0
  histories: list[list] = [[] for _ in specs]
  last_batches: list[Optional[dict]] = [None] * len(specs)
  eval_metrics: dict[str, float] = {}
  iteration = counters["iteration"]
  schedule_step = counters["schedule_step"]
  task_updates = list(counters["task_updates"])
  last_log = (time.time(), iteration)

  def device_batch(t: int, source: Optional[Any] = None) -> dict:
    batch = next(source or iterators[specs[t].key])
    return train_data.to_global({k: batch[k] for k in run.tasks[t].device_keys}, run.mesh)

  def placeholder_batch(t: int) -> dict:
    """A batch of task t from a separate stream (summed mode, weight 0): the checkpointed
    training stream stays where it is, so a resumed run reads the same data."""
    return device_batch(t, iter(run.tasks[t].train_loader(splits[t], tok, seed=config.seed)))

  def save() -> None:
    for t, s in enumerate(specs):  # a non-finite state is never saved
      if histories[t]:
        _check_finite(s.key, jax.device_get(histories[t]), iteration)
    checkpoints.save(iteration, state, iterators, extra={
        "iteration": iteration, "schedule_step": schedule_step, "task_updates": task_updates,
        "controllers": controllers.state_dict()})

  if is_main:
    print(f"multi-task: {len(specs)} tasks, {run.total_iterations} iterations "
          f"(epoch = {run.epoch_length}); passes: "
          + ", ".join(f"{s.key} {n}" for s, n in zip(specs, run.pass_lengths))
          + "; loss scales: " + ", ".join(f"{s.key} {x:g}" for s, x in zip(specs, run.scales)))
  if is_main:  # a run that fails must not leave an older result looking current
    (workdir_path / trainer.EVAL_METRICS_FILE).unlink(missing_ok=True)
  with StopRequest(config.stop_check_every_steps) as stop, jax.set_mesh(run.mesh), \
      nn.logical_axis_rules(sharding.DEFAULT_RULES):
    while iteration < run.total_iterations:
      active = controllers.trains(iteration)
      if any(active):
        schedule_step += 1
      state = train_iteration(run, steps, state, iteration, schedule_step, active,
                              task_updates, device_batch, last_batches, histories,
                              placeholder_batch)
      done = iteration  # 0-based index of the iteration just finished
      iteration += 1
      if iteration % config.log_every_steps == 0 or iteration == run.total_iterations:
        now = time.time()
        line = {"iterations_per_s": (iteration - last_log[1]) / (now - last_log[0])}
        for t, s in enumerate(specs):
          hist = jax.device_get(histories[t])
          line[f"{s.key}/stopped"] = float(controllers.by_key[s.key].stopped)
          line[f"{s.key}/updates"] = float(task_updates[t])
          if hist:
            _check_finite(s.key, hist, iteration)
            mean = _mean(hist)
            mean["learning_rate"] = mean.pop("learning_rate_factor") * min(
                x.learning_rate for x in specs)
            line.update({f"{s.key}/{k}": v for k, v in mean.items()})
          histories[t] = []
        writer.write(iteration, "train", line)
        last_log = (now, iteration)
        if is_main:
          print(f"iteration {iteration}/{run.total_iterations}: " + ", ".join(
              f"{s.key} loss {line.get(f'{s.key}/loss/total', float('nan')):.3f}"
              f"{' (stop)' if controllers.by_key[s.key].stopped else ''}" for s in specs))
      due = [t for t, n in enumerate(run.pass_lengths)
             if evaluation_due(done, n, run.total_iterations)]
      if due:
        results = {t: evaluators[t].run(state.params) for t in due}
        for t, metric in zip(due, same_on_every_host(
            [_score(results[t], specs[t]) for t in due])):
          controllers.step(specs[t].key, metric)
          c = controllers.by_key[specs[t].key]
          line = {f"{specs[t].key}/{k}": v for k, v in results[t].items()}
          line.update({f"{specs[t].key}/stopped": float(c.stopped),
                       f"{specs[t].key}/best": c.best if math.isfinite(c.best) else metric})
          eval_metrics.update(line)
          writer.write(iteration, "eval", line)
      if resets_after(iteration, run.epoch_length, controllers.config.reset_after_epochs):
        controllers.reset_all()
      stopping = stop.agreed(iteration)  # the same on every process
      if iteration % config.checkpoint_every_steps == 0 or stopping:
        save()
      if stopping:
        print(f"{stop.reason}: saved checkpoint at iteration {iteration}, stopping")
        break
    save()
    if iteration == run.total_iterations:
      for t, s in enumerate(specs):
        evaluators[t].write_predictions(str(workdir_path / s.key))
      if is_main:
        trainer.write_json_atomically(workdir_path / trainer.EVAL_METRICS_FILE,
                                      {"iteration": iteration, **eval_metrics})
        print(trainer.metrics_summary(iteration, eval_metrics, unit="iteration"))
      export_multitask(workdir_path / "export", state.params, run)
  checkpoints.close()
  writer.close()
  if is_main:
    trainer.print_paths(workdir_path, checkpoints, writer,
                        evaluated=iteration == run.total_iterations)
  return eval_metrics


def _score(metrics: Mapping[str, float], spec: TaskSpec) -> float:
  if spec.metric not in metrics:
    raise KeyError(f"multitask.tasks.{spec.key}.metric={spec.metric!r} is not among the "
                   f"task's evaluation metrics {sorted(metrics)}")
  return float(metrics[spec.metric])
