"""Pretraining, top to bottom: config -> mesh -> sharded state -> jitted step -> evals/checkpoints.

``train_and_evaluate(config, workdir)`` resumes from ``workdir/checkpoints`` when a checkpoint
is there; otherwise it starts from ``config.init`` (BERT / ViLBERT checkpoint) or from scratch.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import pathlib
import time
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm

from vilbert_jax import sharding
from vilbert_jax.config import ViLBERTConfig
from vilbert_jax.model.vilbert import ViLBERTForPretraining
from vilbert_jax.train import data as train_data
from vilbert_jax.train import optim
from vilbert_jax.train.checkpoints import Checkpoints, StopRequest, abstract_like
from vilbert_jax.train.evaluate import PretrainingEvaluator
from vilbert_jax.train.initialization import initial_params
from vilbert_jax.train.metric_writers import MetricWriter
from vilbert_jax.train.state import TrainState, create_train_state, with_params
from vilbert_jax.train.step import make_eval_step, make_loss_fn, make_train_step

log = logging.getLogger(__name__)


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


def optimizer_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The optimiser block with the BERT learning-rate multiplier folded into its regexes."""
  opt = ml_collections.ConfigDict(config.optimizer.to_dict())
  mult = config.init.bert_lr_multiplier
  if config.init.bert_checkpoint and mult != 1.0:
    opt.lr_multipliers = tuple(opt.lr_multipliers) + tuple(
        (p, mult) for p in optim.BERT_PARAMETERS)
  return opt


@dataclasses.dataclass
class Run:
  """The pieces of a pretraining run, built once by ``setup``."""

  config: ml_collections.ConfigDict
  cfg: ViLBERTConfig
  model: ViLBERTForPretraining
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
    return jax.jit(step, in_shardings=(self.shardings, None),
                   out_shardings=(self.shardings, None), donate_argnums=0 if donate else ())


def setup(config: ml_collections.ConfigDict, num_examples: int,
          devices: Optional[Sequence[jax.Device]] = None) -> Run:
  """Model, mesh (over ``devices``, default all), optimiser and the sharded initial state,
  for ``num_examples`` per epoch."""
  cfg = model_config(config)
  model = ViLBERTForPretraining(cfg)
  mesh = sharding.make_mesh(**config.mesh.to_dict(), devices=devices)
  steps = total_steps(config, num_examples)
  inputs = sample_inputs(cfg, config.data.max_text_len, config.data.num_visual_tokens)
  init_fn = lambda rng: model.init(rng, *inputs)["params"]  # noqa: E731
  abstract_params = nn.unbox(jax.eval_shape(init_fn, jax.random.key(0)))
  opt = optimizer_config(config)
  tx, schedule = optim.make_optimizer(opt, abstract_params, steps)
  state, shardings = create_train_state(init_fn, tx, jax.random.key(config.seed), mesh,
                                        sharding.DEFAULT_RULES)
  loss_fn = make_loss_fn(model)
  return Run(config, cfg, model, mesh, tx, schedule, steps, state, shardings, loss_fn)


def _check_finite(history: list[dict], first_step: int) -> None:
  for offset, metrics in enumerate(history):
    loss = float(metrics["loss/total"])
    if not math.isfinite(loss):
      terms = {k: float(v) for k, v in metrics.items() if k.startswith("loss/")}
      raise NonFiniteLossError(f"non-finite loss at step {first_step + offset}: {terms}; "
                               "stopping (lower the learning rate or check the data)")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains, evaluates and checkpoints; returns the final evaluation metrics."""
  workdir_path = pathlib.Path(workdir).expanduser().absolute()
  tok = train_data.tokenizer(config)
  if tok.vocab_size > config.model.vocab_size:
    raise ValueError(f"the tokenizer has {tok.vocab_size} ids but model.vocab_size="
                     f"{config.model.vocab_size}")
  train_split = train_data.open_dataset(config, config.data.train_split)
  run = setup(config, train_split.task_items("captions").total)
  train_loader = train_data.pretraining_loader(config, train_split, tok, seed=config.seed)
  train_iter = iter(train_loader)
  checkpoints = Checkpoints(workdir_path / "checkpoints", keep=config.keep_checkpoints)
  state = run.state
  if checkpoints.latest_step() is not None:
    state = checkpoints.restore(abstract_like(state, run.shardings), train_iter)
    log.info("resumed from step %d", int(state.step))
  else:
    params, report = initial_params(jax.device_get(state.params), run.cfg,
                                    config.init.bert_checkpoint, config.init.vilbert_checkpoint)
    if report is not None:
      state = with_params(state, params, run.shardings)
      print(report.summary())

  train_step = run.jit_train_step()
  evaluator = PretrainingEvaluator(config, run.model, run.mesh, make_eval_step(run.loss_fn),
                                   tok)
  writer = MetricWriter(workdir_path)
  step = int(state.step)
  history: list[dict] = []
  last_log_time, last_log_step = time.time(), step
  eval_metrics: dict[str, float] = {}
  is_main = jax.process_index() == 0

  with StopRequest() as stop, jax.set_mesh(run.mesh), nn.logical_axis_rules(
      sharding.DEFAULT_RULES), tqdm.tqdm(total=run.steps, initial=step, disable=not is_main,
                                         desc="train", dynamic_ncols=True) as bar:
    while step < run.steps:
      batch = train_data.to_global(next(train_iter), run.mesh)
      state, metrics = train_step(state, batch)
      history.append(metrics)
      step += 1
      bar.update(1)
      if step % config.log_every_steps == 0 or step == run.steps:
        history = jax.device_get(history)
        _check_finite(history, step - len(history) + 1)
        now = time.time()
        mean = {k: float(np.mean([h[k] for h in history])) for k in history[0]}
        mean["examples_per_s"] = (step - last_log_step) * config.batch_size / (now - last_log_time)
        writer.write(step, "train", mean)
        bar.set_postfix(loss=f"{mean['loss/total']:.3f}",
                        align=f"{mean['alignment_accuracy']:.2f}")
        history, last_log_time, last_log_step = [], now, step
      if config.eval_every_steps and step % config.eval_every_steps == 0 and step < run.steps:
        eval_metrics = evaluator.run(state.params)
        writer.write(step, "eval", eval_metrics)
      if step % config.checkpoint_every_steps == 0 or stop:
        checkpoints.save(step, state, train_iter)
      if stop:
        print(f"received {stop.signal_name}: saved checkpoint at step {step}, stopping")
        break
    checkpoints.save(step, state, train_iter)
    if step == run.steps:
      eval_metrics = evaluator.run(state.params)
      writer.write(step, "eval", eval_metrics)
  checkpoints.close()
  writer.close()
  if is_main:
    print("final eval: " + ", ".join(f"{k}={v:.4g}" for k, v in sorted(eval_metrics.items())))
    print(f"checkpoints: {checkpoints.directory}\nmetrics:     {writer.jsonl_path}\n"
          f"tensorboard: {writer.tensorboard_dir}")
  return eval_metrics


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """``mode=eval``: evaluates the latest checkpoint in ``workdir``; writes
  ``workdir/eval_metrics.json`` and an ``eval`` line in ``metrics.jsonl``."""
  workdir_path = pathlib.Path(workdir).expanduser().absolute()
  checkpoints = Checkpoints(workdir_path / "checkpoints", keep=config.keep_checkpoints)
  if checkpoints.latest_step() is None:
    raise FileNotFoundError(f"no checkpoint in {checkpoints.directory}; train first")
  tok = train_data.tokenizer(config)
  run = setup(config, num_examples=config.batch_size)
  state = checkpoints.restore(abstract_like(run.state, run.shardings), None)
  checkpoints.close()
  evaluator = PretrainingEvaluator(config, run.model, run.mesh, make_eval_step(run.loss_fn),
                                   tok)
  with jax.set_mesh(run.mesh), nn.logical_axis_rules(sharding.DEFAULT_RULES):
    metrics = evaluator.run(state.params)
  writer = MetricWriter(workdir_path)
  writer.write(int(state.step), "eval", metrics)
  writer.close()
  if jax.process_index() == 0:
    (workdir_path / "eval_metrics.json").write_text(
        json.dumps({"step": int(state.step), **metrics}, indent=2))
    print("eval: " + ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items())))
  return metrics
