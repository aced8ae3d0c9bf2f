"""Training and evaluation of any task, top to bottom: config -> task -> mesh -> sharded
state -> jitted step -> evaluations, checkpoints, exported params.

``train_and_evaluate(config, workdir)`` resumes from ``workdir/checkpoints`` when a checkpoint
is there; otherwise it starts from ``config.init_checkpoint`` (a pretrained ViLBERT) or
``config.init.bert_checkpoint`` (BERT), or from scratch. What is task-specific (model heads,
loss, data, metrics, prediction files) comes from ``vilbert_jax.tasks``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import os
import pathlib
import re
import time
from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm

from vilbert_jax import sharding
from vilbert_jax import tasks
from vilbert_jax.config import ViLBERTConfig
from vilbert_jax.train import data as train_data
from vilbert_jax.train import optim
from vilbert_jax.train.checkpoints import Checkpoints, StopRequest, abstract_like
from vilbert_jax.train.export import export_params
from vilbert_jax.train.initialization import (REPORT_FILE, bert_loaded_paths, initial_params,
                                              save_report)
from vilbert_jax.train.metric_writers import MetricWriter
from vilbert_jax.train.state import (TrainState, abstract_train_state, create_train_state,
                                     fresh_params, train_state_from_params)
from vilbert_jax.train.step import make_train_step

log = logging.getLogger(__name__)


EVAL_METRICS_FILE = "eval_metrics.json"  # in the workdir: the latest evaluation, with its step


class NonFiniteLossError(FloatingPointError):
  """The loss became NaN or Inf; the message names the step."""


def model_config(config: ml_collections.ConfigDict) -> ViLBERTConfig:
  """The model block as a validated ViLBERTConfig (a clear error names a bad field)."""
  fields = config.model.to_dict()
  known = {f.name for f in dataclasses.fields(ViLBERTConfig)}
  unknown = sorted(set(fields) - known)
  if unknown:
    raise ValueError(f"config.model has unknown field(s) {unknown}")
  return ViLBERTConfig(**fields)


def sample_inputs(cfg: ViLBERTConfig, text_len: int, num_visual: int, batch: int = 1):
  """Zero inputs of the right shapes (for init, eval_shape and benchmarks)."""
  ids = jnp.zeros((batch, text_len), jnp.int32)
  return (ids, ids, jnp.ones_like(ids), jnp.zeros((batch, num_visual, cfg.v_feature_size)),
          jnp.zeros((batch, num_visual, 5)), jnp.ones((batch, num_visual), jnp.int32))


def total_steps(config: ml_collections.ConfigDict, num_examples: int) -> int:
  if config.num_train_steps > 0:
    return int(config.num_train_steps)
  return max(1, int(config.num_epochs * num_examples // config.batch_size))


def optimizer_config(config: ml_collections.ConfigDict,
                     bert_loaded: Sequence[str] = ()) -> ml_collections.ConfigDict:
  """The optimiser block with ``init.bert_lr_multiplier`` on exactly the parameter paths in
  ``bert_loaded`` (those the BERT checkpoint filled, from the load report), after the
  config's own multipliers (the first matching regex wins)."""
  opt = ml_collections.ConfigDict(config.optimizer.to_dict())
  mult = config.init.bert_lr_multiplier
  if bert_loaded and mult != 1.0:
    opt.lr_multipliers = tuple(opt.lr_multipliers) + tuple(
        (f"^{re.escape(path)}$", mult) for path in bert_loaded)
  return opt


@dataclasses.dataclass
class Run:
  """The pieces of a run, built once by ``setup``."""

  config: ml_collections.ConfigDict
  cfg: ViLBERTConfig
  task: tasks.Task
  model: nn.Module
  mesh: Any
  tx: Any
  schedule: Any
  steps: int
  state: TrainState
  shardings: TrainState
  loss_fn: Any

  def jit_train_step(self, donate: bool = True):
    """The jitted ``train_step(state, batch)``: state in and out in its shardings, the batch
    already sharded (``train_data.to_global``); the old state is donated unless told not to."""
    step = make_train_step(self.loss_fn, self.tx, self.schedule, self.config.seed,
                           self.config.grad_accum_steps)

    def step_with_rules(state, batch):  # activation constraints need the rules when traced
      with nn.logical_axis_rules(sharding.DEFAULT_RULES):
        return step(state, batch)
    return jax.jit(step_with_rules, in_shardings=(self.shardings, None),
                   out_shardings=(self.shardings, None), donate_argnums=0 if donate else ())


def setup(config: ml_collections.ConfigDict, num_examples: int,
          devices: Optional[Sequence[jax.Device]] = None,
          metadata: Optional[dict] = None, abstract: bool = False,
          bert_loaded: Sequence[str] = (), start: Optional[Callable[..., Any]] = None) -> Run:
  """Task, model, mesh (over ``devices``, default all), optimiser and the sharded initial
  state, for ``num_examples`` per epoch; ``metadata``: the dataset's (e.g. answer vocab).
  ``abstract``: the state as ``jax.ShapeDtypeStruct`` leaves with shardings (nothing
  allocated), for compiling ahead of time.

  The optimiser is built once, with ``init.bert_lr_multiplier`` on the parameter paths
  ``bert_loaded`` (a resumed run's, from its load report) or, given ``start(cfg, fresh host
  params) -> (params, bert-loaded paths)``, on those ``start`` returns; the state then holds
  ``start``'s params."""
  cfg = model_config(config)
  task = tasks.create(config, metadata or {})
  model = task.build_model(cfg)
  mesh = sharding.make_mesh(**config.mesh.to_dict(), devices=devices)
  steps = total_steps(config, num_examples)
  # Batch 2: the 12-in-1 NLVR2 head (pairs of examples) exists only for even batches.
  inputs = sample_inputs(cfg, config.data.max_text_len, config.data.num_visual_tokens, batch=2)
  init_fn = lambda rng: model.init(rng, *inputs)["params"]  # noqa: E731
  abstract_params = nn.unbox(jax.eval_shape(init_fn, jax.random.key(0)))
  rng, rules = jax.random.key(config.seed), sharding.DEFAULT_RULES
  params = None
  if start is not None:
    params, bert_loaded = start(cfg, fresh_params(init_fn, rng, mesh, rules))
  opt = optimizer_config(config, bert_loaded)
  tx, schedule = optim.make_optimizer(opt, abstract_params, steps)
  if params is not None:
    state, shardings = train_state_from_params(init_fn, params, tx, rng, mesh, rules)
  else:
    make_state = abstract_train_state if abstract else create_train_state
    state, shardings = make_state(init_fn, tx, rng, mesh, rules)
  return Run(config, cfg, task, model, mesh, tx, schedule, steps, state, shardings,
             task.loss_fn(model))


def _check_finite(history: list[dict], first_step: int) -> None:
  for offset, metrics in enumerate(history):
    loss = float(metrics["loss/total"])
    if not math.isfinite(loss):
      terms = {k: float(v) for k, v in metrics.items() if k.startswith("loss/")}
      raise NonFiniteLossError(f"non-finite loss at step {first_step + offset}: {terms}; "
                               "stopping (lower the learning rate or check the data)")


def _starting_params(config: ml_collections.ConfigDict, workdir: pathlib.Path,
                     cfg: ViLBERTConfig, fresh: Any) -> tuple[Any, tuple[str, ...]]:
  """``fresh`` (host params) with ``config.init_checkpoint`` / ``init.bert_checkpoint`` laid
  over them (the load report saved in ``workdir``), and the parameter paths taken from BERT:
  ``setup``'s ``start``."""
  params, report = initial_params(fresh, cfg, config.init.bert_checkpoint,
                                  config.init_checkpoint)
  if report is None:
    return params, ()
  kind = "bert" if config.init.bert_checkpoint else "vilbert"
  save_report(workdir, config.init.bert_checkpoint or config.init_checkpoint, kind, report)
  if jax.process_index() == 0:
    print(f"{report.summary()} (list: {workdir / REPORT_FILE})")
  return params, report.loaded if kind == "bert" else ()


def _start(config: ml_collections.ConfigDict, workdir: pathlib.Path
           ) -> Optional[Callable[..., Any]]:
  """``setup``'s ``start`` for a run that begins from ``config``'s checkpoint, if it names
  one."""
  if not (config.init.bert_checkpoint or config.init_checkpoint):
    return None
  return functools.partial(_starting_params, config, workdir)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains, evaluates and checkpoints; returns the final evaluation metrics.

  Writes ``workdir/checkpoints`` (resumable), ``metrics.jsonl`` + TensorBoard events,
  ``eval_metrics.json``, the task's prediction files and ``export/`` (params + model and task
  description, the input of ``vilbert_jax.predict`` and of ``--config.init_checkpoint``).
  """
  workdir_path = pathlib.Path(workdir).expanduser().absolute()
  tok = train_data.tokenizer(config)
  if tok.vocab_size > config.model.vocab_size:
    raise ValueError(f"the tokenizer has {tok.vocab_size} ids but model.vocab_size="
                     f"{config.model.vocab_size}")
  train_split = train_data.open_dataset(config, config.data.train_split)
  task = tasks.create(config, train_split.metadata)
  if not task.trainable:
    raise ValueError(f"task {task.name!r} has no training; run --config.mode=eval")
  checkpoints = Checkpoints(workdir_path / "checkpoints", keep=config.keep_checkpoints)
  if (config.init.required and not config.init_checkpoint
      and checkpoints.latest_step() is None):
    raise ValueError(f"{task.name} fine-tunes a pretrained ViLBERT: set "
                     "--config.init_checkpoint (a pretraining workdir or a converted "
                     "checkpoint), or choose the no_pretraining variant")
  resume = checkpoints.latest_step() is not None
  run = setup(config, train_split.task_items(task.train_items).total,
              metadata=train_split.metadata,
              bert_loaded=(bert_loaded_paths(workdir_path)
                           if resume and config.init.bert_checkpoint else ()),
              start=None if resume else _start(config, workdir_path))
  train_iter = iter(task.train_loader(train_split, tok, seed=config.seed))
  state = run.state
  if resume:
    state = checkpoints.restore(abstract_like(run.state, run.shardings), train_iter)
    log.info("resumed from step %d", int(state.step))

  train_step = run.jit_train_step()
  evaluator = task.evaluator(run.model, run.mesh, tok)
  writer = MetricWriter(workdir_path)
  step = int(state.step)
  history: list[dict] = []  # metrics of the steps since the last log line (device arrays)
  last_log_time, last_log_step = time.time(), step
  eval_metrics: dict[str, float] = {}
  is_main = jax.process_index() == 0

  def checked_history() -> list[dict]:
    """The pending metrics on the host, after stopping on a non-finite loss among them."""
    pending = jax.device_get(history)
    _check_finite(pending, step - len(pending) + 1)
    return pending

  with StopRequest(config.stop_check_every_steps) as stop, jax.set_mesh(run.mesh), \
      nn.logical_axis_rules(sharding.DEFAULT_RULES):
    with tqdm.tqdm(total=run.steps, initial=step, disable=not is_main,
                   desc=f"train {task.name}", dynamic_ncols=True) as bar:
      while step < run.steps:
        batch = next(train_iter)
        state, metrics = train_step(
            state, train_data.to_global({k: batch[k] for k in task.device_keys}, run.mesh))
        history.append(metrics)
        step += 1
        bar.update(1)
        if step % config.log_every_steps == 0 or step == run.steps:
          history = checked_history()
          now = time.time()
          mean = {k: float(np.mean([h[k] for h in history])) for k in history[0]}
          mean["examples_per_s"] = ((step - last_log_step) * config.batch_size
                                    / (now - last_log_time))
          writer.write(step, "train", mean)
          bar.set_postfix(loss=f"{mean['loss/total']:.3f}",
                          **{task.progress_metric: f"{mean[task.progress_metric]:.2f}"})
          history, last_log_time, last_log_step = [], now, step
        if (config.eval_every_steps and step % config.eval_every_steps == 0
            and step < run.steps):
          eval_metrics = evaluator.run(state.params)
          writer.write(step, "eval", eval_metrics)
        stopping = stop.agreed(step)
        if step % config.checkpoint_every_steps == 0 or stopping:
          history = checked_history()  # a non-finite state is never saved
          checkpoints.save(step, state, train_iter)
        if stopping:
          print(f"{stop.reason}: saved checkpoint at step {step}, stopping")
          break
    history = checked_history()
    checkpoints.save(step, state, train_iter)
    batch = None  # the last batch's shared memory (grain workers) is released now, not at exit
    train_data.close_iterator(train_iter)
    if step == run.steps:
      eval_metrics = _final_evaluation(evaluator, state, workdir_path, writer)
      export_params(workdir_path / "export", state.params, run)
  checkpoints.close()
  writer.close()
  if is_main:
    print_paths(workdir_path, checkpoints, writer, evaluated=bool(eval_metrics))
  return eval_metrics


def print_paths(workdir: pathlib.Path, checkpoints: Checkpoints, writer: MetricWriter,
                evaluated: bool) -> None:
  """Prints where a training run's outputs are (its last lines): checkpoints, metrics and
  TensorBoard, and with `evaluated` the final evaluation and the export."""
  print(f"checkpoints: {checkpoints.directory}\nmetrics:     {writer.jsonl_path}\n"
        f"tensorboard: {writer.tensorboard_dir}")
  if evaluated:
    print(f"eval:        {workdir / EVAL_METRICS_FILE}\n"
          f"export:      {workdir / 'export'}")


def _final_evaluation(evaluator: Any, state: TrainState, workdir: pathlib.Path,
                      writer: MetricWriter) -> dict[str, float]:
  """Evaluates ``state``; writes ``eval_metrics.json``, a metrics line and prediction files."""
  result = workdir / EVAL_METRICS_FILE
  is_main = jax.process_index() == 0
  if is_main:  # a failed evaluation must not leave an older result looking current
    result.unlink(missing_ok=True)
  metrics = evaluator.run(state.params)
  step = int(state.step)
  writer.write(step, "eval", metrics)
  paths = evaluator.write_predictions(str(workdir))
  if is_main:
    write_json_atomically(result, {"step": step, **metrics})
    print(metrics_summary(step, metrics))
    for path in paths:
      print(f"predictions: {path}")
  return metrics


def write_json_atomically(path: pathlib.Path, record: dict) -> None:
  """Writes ``record`` as JSON to ``path`` so that the file is either complete or absent."""
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text(json.dumps(record, indent=2))
  os.replace(tmp, path)


def metrics_summary(step: int, metrics: dict[str, float], unit: str = "step") -> str:
  """The held-out metrics as an aligned table, one per line, under "held-out evaluation at
  `unit` `step`:"."""
  width = max(map(len, metrics), default=0)
  lines = [f"  {k:<{width}}  {v:.4g}" for k, v in sorted(metrics.items())]
  return "\n".join([f"held-out evaluation at {unit} {step}:", *lines])


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """``mode=eval``: evaluates the latest checkpoint in ``workdir`` or, without one,
  ``config.init_checkpoint`` (e.g. a converted released model, or zero-shot retrieval of a
  pretrained one). Writes ``workdir/eval_metrics.json``, an ``eval`` line in ``metrics.jsonl``
  and the task's prediction files."""
  workdir_path = pathlib.Path(workdir).expanduser().absolute()
  tok = train_data.tokenizer(config)
  metadata = train_data.open_dataset(config, config.data.eval_splits[0]).metadata
  checkpoints = Checkpoints(workdir_path / "checkpoints", keep=config.keep_checkpoints)
  resume = checkpoints.latest_step() is not None
  if not resume and not config.init_checkpoint:
    checkpoints.close()
    raise FileNotFoundError(f"no checkpoint in {checkpoints.directory} and no "
                            "--config.init_checkpoint: nothing to evaluate")
  run = setup(config, num_examples=config.batch_size, metadata=metadata,
              start=None if resume else _start(config, workdir_path))
  state = (checkpoints.restore(abstract_like(run.state, run.shardings), None) if resume
           else run.state)
  checkpoints.close()
  evaluator = run.task.evaluator(run.model, run.mesh, tok)
  writer = MetricWriter(workdir_path)
  with jax.set_mesh(run.mesh), nn.logical_axis_rules(sharding.DEFAULT_RULES):
    metrics = _final_evaluation(evaluator, state, workdir_path, writer)
  writer.close()
  return metrics
