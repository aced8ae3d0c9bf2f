"""Multi-task training (12-in-1 schedule): the stop-and-go rule, the round-robin updates, the
optimiser, resuming, multi-process decisions and the launch commands."""

import dataclasses
import json
import math
import pathlib
import shutil
import socket
import subprocess
import sys

import flax
import jax
import numpy as np
import pytest

from configs import multitask_synthetic
from train_utils import ROOT, TINY, _set, launch
from vilbert_jax import tasks
from vilbert_jax.train import multitask
from vilbert_jax.train import optim
from vilbert_jax.train import data as train_data
from vilbert_jax.train.checkpoints import Checkpoints
from vilbert_jax.train.initialization import load_checkpoint_params
from vilbert_jax.train.stop_and_go import StopAndGo, StopAndGoConfig
from vilbert_jax.train.trainer import NonFiniteLossError

NO_DROPOUT = {f"model.{k}": 0.0 for k in ("hidden_dropout_prob", "v_hidden_dropout_prob",
                                          "attention_probs_dropout_prob",
                                          "v_attention_probs_dropout_prob")}
# Tiny model and data; batches sized so that a pass over RefCOCO+ is 4 iterations and one over
# VQA 8 (the tiny scenes have 256 expressions and 512 questions).
TASK_SIZES = {"vqa": 64, "retrieval": 8, "refcoco_plus": 64}


def _overrides(data_dir) -> dict:
  keep = {k: v for k, v in TINY.items()
          if k.startswith(("model.", "data.synthetic.", "data.worker_count", "log_every_steps",
                           "eval.retrieval_images"))}
  return {**keep, **NO_DROPOUT, "data.data_dir": str(data_dir),
          "eval.retrieval_captions_per_image": 1}


def tiny_multitask_config(data_dir, order=("vqa", "refcoco_plus"), **overrides):
  c = multitask_synthetic.get_config("no_pretraining")
  for key, value in _overrides(data_dir).items():
    _set(c, key, value)
  c.multitask.order = tuple(order)
  for key, batch in TASK_SIZES.items():
    c.multitask.tasks[key].batch_size = batch
    c.multitask.tasks[key].eval_batch_size = 48
  c.num_train_steps = 12
  c.checkpoint_every_steps = 6
  c.log_every_steps = 4
  for key, value in overrides.items():
    _set(c, key, value)
  return c


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("tfds")


# ----------------------------------------------------------------------- stop-and-go rule
def _run(scores, config=StopAndGoConfig()):
  c = StopAndGo(config)
  return [(c.step(s), c.best, c.num_bad, c.cooldown_left) for s in scores]


def test_stop_and_go_every_branch_on_a_hand_made_sequence():
  # Defaults: patience 1, +0.1% counts as progress, -0.5% restarts, cooldown 1.
  got = _run([10.0, 10.009, 10.0, 9.0, 9.5, 9.5, 9.5, 9.96, 10.02, 10.02, 10.02])
  assert got == [
      (False, 10.0, 0, 0),    # first score: the best (best starts at -inf)
      (False, 10.0, 1, 0),    # +0.09%: not progress, one bad evaluation
      (True, 10.0, 0, 1),     # two bad in a row: stop, cooldown starts
      (False, 10.0, 0, 1),    # cooldown eats the count; -10% < -0.5%: go again
      (False, 10.0, 0, 0),    # right after the switch: never counts
      (False, 10.0, 1, 0),    # bad 1
      (True, 10.0, 0, 1),     # bad 2: stop
      (True, 10.0, 0, 0),     # -0.4%: not a drop that restarts; cooldown eats the count
      (True, 10.02, 0, 0),    # a new best while stopped does not restart the task
      (True, 10.02, 1, 0),
      (True, 10.02, 0, 1),    # two bad in a row while stopped: stopped again, new cooldown
  ]


def test_stop_and_go_gain_threshold_is_relative():
  assert _run([100.0, 100.11])[-1][:3] == (False, 100.11, 0)  # +0.11%: progress
  assert _run([100.0, 100.09])[-1][:3] == (False, 100.0, 1)  # +0.09%: not
  looser = StopAndGoConfig(patience=2, threshold=0.01, continue_threshold=0.1, cooldown=0)
  got = _run([1.0, 1.009, 1.0, 1.0, 0.95, 0.89], looser)
  assert [g[0] for g in got] == [False, False, False, True, True, False]


def test_stopped_task_trains_every_fourth_iteration_and_reset_restarts_it():
  c = StopAndGo()
  assert all(c.trains_at(i) for i in range(8))
  for s in (1.0, 1.0, 1.0):
    c.step(s)
  assert c.stopped and [i for i in range(13) if c.trains_at(i)] == [0, 4, 8, 12]
  c.reset()
  assert (c.stopped, c.best, c.num_bad, c.cooldown_left) == (False, -math.inf, 0, 0)
  off = StopAndGo(StopAndGoConfig(enabled=False))
  off.stopped = True
  assert all(off.trains_at(i) for i in range(8))


def test_controller_state_round_trips_and_continues_the_same():
  a = StopAndGo()
  for s in (5.0, 5.0):
    a.step(s)
  b = StopAndGo()
  b.load_state_dict(json.loads(json.dumps(a.state_dict())))
  assert [a.step(s) for s in (5.0, 4.0, 4.0, 4.0)] == [b.step(s) for s in (5.0, 4.0, 4.0, 4.0)]
  assert json.loads(json.dumps(StopAndGo().state_dict()))["best"] is None
  with pytest.raises(ValueError, match="lacks"):
    b.load_state_dict({"best": 1.0})
  with pytest.raises(ValueError, match="train_iter_gap"):
    StopAndGoConfig(train_iter_gap=0)


def test_controllers_reset_after_the_listed_epochs():
  epochs = (5, 7)
  resets = [i for i in range(1, 100) if multitask.resets_after(i, 10, epochs)]
  assert resets == [60, 80]  # ends of the 0-based epochs 5 and 7
  assert [i for i in range(13) if multitask.evaluation_due(i, 4, 13)] == [4, 8, 12]
  assert [i for i in range(10) if multitask.evaluation_due(i, 4, 10)] == [4, 8, 9]


# ---------------------------------------------------------------- learning rates, scales
def test_vil_heads_get_the_head_rate_and_losses_scale_by_task_rate():
  assert multitask.head_learning_rate_pattern("neurips") == r"^(retrieval_head|vqa_head)/"
  assert multitask.head_learning_rate_pattern("12in1") == (
      r"^(entailment_head|gqa_head|pair_head|retrieval_head|vqa_head)/")
  params = {"vqa_head": {"hidden": {"kernel": 0}}, "grounding_head": {"kernel": 0},
            "backbone": {"pooler": {"bias": 0}}, "pair_head": {"bias": 0}}
  lrs = multitask.learning_rates(params, 2e-5, 1e-4, "12in1")
  assert lrs == {"vqa_head": {"hidden": {"kernel": 1e-4}}, "grounding_head": {"kernel": 2e-5},
                 "backbone": {"pooler": {"bias": 2e-5}}, "pair_head": {"bias": 1e-4}}
  specs = multitask.task_specs(multitask_synthetic.get_config())
  specs = [dataclasses.replace(s, learning_rate=lr, loss_weight=w)
           for s, lr, w in zip(specs, (4e-5, 2e-5, 4e-5), (1.0, 1.0, 0.5))]
  assert multitask.loss_scales(specs) == [2.0, 1.0, 1.0]


def test_config_errors_name_the_problem(tmp_path):
  c = multitask_synthetic.get_config()
  c.multitask.order = ("vqa", "nlvr2")
  with pytest.raises(ValueError, match="nlvr2"):
    multitask.task_specs(c)
  c = multitask_synthetic.get_config()
  c.multitask.tasks.vqa.name = "zeroshot_retrieval"
  with pytest.raises(ValueError, match="not a trainable task"):
    multitask.task_specs(c)


def test_each_task_carries_its_own_task_token(data_dir):
  """With task tokens, ``Task.forward`` gives each task's pairs its configured id."""
  config = tiny_multitask_config(data_dir, order=("vqa", "retrieval", "refcoco_plus"),
                                 **{"model.task_specific_tokens": True,
                                    "multitask.tasks.refcoco_plus.task_id": 9})
  ids = []
  for spec in multitask.task_specs(config):
    c = multitask.single_task_config(config, spec, num_answers=3)
    task = tasks.create(c, {"answer_vocab": ["yes", "no", "2"]})
    assert c.model.task_specific_tokens and task.num_answers == 3
    ids.append(task.configured_task_id)
  assert ids == [1, 8, 9]  # VQA's and Flickr30k's 12-in-1 ids; RefCOCO+ set to 9


# ------------------------------------------------------------- one iteration, by hand
def _reference_update(params, grads, mu, nu, lrs, decay, factor, wd=0.01, eps=1e-6):
  """The original's AdamW(correct_bias=False), in numpy, decay on the updated weights."""
  mu = jax.tree.map(lambda m, g: 0.9 * m + 0.1 * g, mu, grads)
  nu = jax.tree.map(lambda v, g: 0.999 * v + 0.001 * g * g, nu, grads)

  def one(p, m, v, lr, d):
    p = p - lr * factor * m / (np.sqrt(v) + eps)
    return p - lr * factor * wd * p if d else p
  return jax.tree.map(one, params, mu, nu, lrs, decay), mu, nu


@pytest.fixture(scope="module")
def three_tasks(data_dir):
  """A run of three tasks (VQA's rate twice the others: loss scale 2) and one batch each."""
  config = tiny_multitask_config(data_dir, order=("vqa", "retrieval", "refcoco_plus"),
                                 **{"multitask.tasks.vqa.learning_rate": 4e-4,
                                    "multitask.head_learning_rate": 1e-3})
  splits, counts = multitask.training_splits(config)
  run = multitask.setup(config, [s.metadata for s in splits], counts)
  tok = train_data.tokenizer(config)
  batches = []
  for task, split in zip(run.tasks, splits):
    batch = next(iter(task.train_loader(split, tok, seed=0)))
    batches.append({k: batch[k] for k in task.device_keys})
  return config, run, batches


def _grads(run, t, params, batch, scale, key):
  loss_fn = run.tasks[t].loss_fn(run.models[t])
  return jax.jit(jax.grad(lambda p: scale * loss_fn(p, batch, key)[0]))(params)


# The retrieval head's bias adds the same number to the 4 options of its softmax: its gradient
# is 0 up to rounding, which Adam's m / sqrt(v) turns into an update of arbitrary sign.
SOFTMAX_INVARIANT = ("retrieval_head/bias",)


def _assert_params_close(got, want):
  got = flax.traverse_util.flatten_dict(jax.device_get(got), sep="/")
  want = flax.traverse_util.flatten_dict(want, sep="/")
  assert got.keys() == want.keys()
  bad = [path for path in want if path not in SOFTMAX_INVARIANT
         and not np.allclose(got[path], want[path], rtol=2e-4, atol=2e-6)]
  assert not bad, bad


def test_one_iteration_is_each_tasks_update_in_turn(three_tasks):
  config, run, batches = three_tasks
  assert run.scales == [2.0, 1.0, 1.0]
  params = jax.device_get(run.state.params)
  lrs = multitask.learning_rates(params, 2e-4, 1e-3, config.task.head_variant)
  decay = optim.decay_mask(params, "standard")
  factor = float(run.optimizer.factor(1))
  mu = nu = jax.tree.map(np.zeros_like, params)
  expected, first_mu = params, None
  for t, scale in enumerate(run.scales):  # each task's update on the previous one's params
    grads = jax.device_get(_grads(run, t, expected, batches[t], scale,
                                  multitask._dropout_key(config.seed, t, 0)))
    expected, mu, nu = _reference_update(expected, grads, mu, nu, lrs, decay, factor)
    if t == 0:
      unscaled = jax.device_get(_grads(run, 0, params, batches[0], 1.0,
                                       multitask._dropout_key(config.seed, 0, 0)))
      first_mu = jax.tree.map(lambda g: 0.1 * 2.0 * g, unscaled)  # the loss scale, seen by Adam
      np.testing.assert_allclose(mu["vqa_head"]["output"]["bias"],
                                 first_mu["vqa_head"]["output"]["bias"], rtol=1e-5, atol=1e-9)

  histories, updates = [[], [], []], [0, 0, 0]
  with jax.set_mesh(run.mesh):
    state = multitask.train_iteration(
        run, run.task_steps(), run.state, 0, 1, [True] * 3, updates,
        lambda t: train_data.to_global(batches[t], run.mesh), [None] * 3, histories)
  assert updates == [1, 1, 1] and int(state.step) == 3
  _assert_params_close(state.params, expected)
  assert not np.allclose(jax.device_get(state.params["vqa_head"]["output"]["bias"]),
                         params["vqa_head"]["output"]["bias"])


def test_summed_variant_takes_one_update_on_the_weighted_sum(three_tasks, data_dir):
  config, _, batches = three_tasks
  config = tiny_multitask_config(data_dir, order=("vqa", "retrieval", "refcoco_plus"),
                                 **{"multitask.tasks.vqa.learning_rate": 4e-4,
                                    "multitask.head_learning_rate": 1e-3,
                                    "multitask.mode": "summed"})
  splits, counts = multitask.training_splits(config)
  run = multitask.setup(config, [s.metadata for s in splits], counts)
  params = jax.device_get(run.state.params)
  active = [True, False, True]  # retrieval skips this iteration: weight 0
  grads = None
  for t, scale in enumerate(run.scales):
    if active[t]:
      g = jax.device_get(_grads(run, t, params, batches[t], scale,
                                multitask._dropout_key(config.seed, t, 0)))
      grads = g if grads is None else jax.tree.map(np.add, grads, g)
  zeros = jax.tree.map(np.zeros_like, params)
  expected, _, _ = _reference_update(
      params, grads, zeros, zeros, multitask.learning_rates(params, 2e-4, 1e-3, "neurips"),
      optim.decay_mask(params, "standard"), float(run.optimizer.factor(1)))
  updates, last = [0, 0, 0], [None] * 3
  with jax.set_mesh(run.mesh):
    state = multitask.train_iteration(
        run, [run.summed_step()], run.state, 0, 1, active, updates,
        lambda t: train_data.to_global(batches[t], run.mesh), last, [[], [], []])
  assert updates == [1, 0, 1] and int(state.step) == 1
  _assert_params_close(state.params, expected)


# ------------------------------------------------------------------ end to end, resume
def _lines(workdir, split):
  lines = (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()
  return [m for m in map(json.loads, lines) if m["split"] == split]


# patience 0 and no score counting as progress: RefCOCO+ (pass: 4 iterations) is evaluated
# after iterations 4 and 8 (0-based) and stops at the second; VQA (pass: 8) after 8; both
# again after the last iteration (11).
# A restart would need a drop of 99.9%.
STOPPING = {"multitask.stop_and_go.patience": 0, "multitask.stop_and_go.threshold": 100.0,
            "multitask.stop_and_go.continue_threshold": 0.999}


@pytest.fixture(scope="module")
def finished(data_dir, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("multitask")
  metrics = multitask.train_and_evaluate(tiny_multitask_config(data_dir, **STOPPING),
                                         str(workdir))
  return workdir, metrics


def test_stop_and_go_run_resumes_exactly(finished, data_dir, tmp_path):
  workdir, metrics = finished
  # VQA stops too, at its second evaluation (the last one), too late to skip anything.
  assert metrics["refcoco_plus/stopped"] == 1.0 and metrics["vqa/stopped"] == 1.0
  extra = Checkpoints(workdir / "checkpoints").extra()
  # RefCOCO+ stopped after iteration 8 (0-based): it skipped 9, 10 and 11.
  assert extra["task_updates"] == [12, 9] and extra["iteration"] == 12
  assert extra["controllers"]["refcoco_plus"]["stopped"] is True
  train = _lines(workdir, "train")
  assert [m["refcoco_plus/stopped"] for m in train] == [0.0, 0.0, 1.0]
  assert {"vqa/loss/total", "refcoco_plus/accuracy", "vqa/learning_rate"} <= set(train[0])
  assert [m["step"] for m in _lines(workdir, "eval")] == [5, 9, 9, 12, 12]

  resumed = tmp_path / "resumed"  # the same run, cut after its checkpoint at iteration 6
  shutil.copytree(workdir / "checkpoints", resumed / "checkpoints")
  shutil.rmtree(resumed / "checkpoints" / "12")
  again = multitask.train_and_evaluate(tiny_multitask_config(data_dir, **STOPPING),
                                       str(resumed))
  assert again == metrics
  assert Checkpoints(resumed / "checkpoints").extra() == extra
  for x, y in zip(jax.tree.leaves(load_checkpoint_params(str(workdir))),
                  jax.tree.leaves(load_checkpoint_params(str(resumed)))):
    np.testing.assert_array_equal(x, y)  # the exported final params


@pytest.mark.multiprocess
def test_two_processes_take_the_same_decisions():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  worker = str(ROOT / "tests" / "stop_and_go_worker.py")
  procs = [subprocess.Popen([sys.executable, worker, str(port), "2", str(i)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for i in range(2)]
  outs = [p.communicate(timeout=120)[0] for p in procs]
  assert all(p.returncode == 0 for p in procs), outs
  results = [json.loads(o.strip().splitlines()[-1]) for o in outs]
  assert sorted(r["process"] for r in results) == [0, 1]
  first = next(r for r in results if r["process"] == 0)
  assert results[0]["local"] != results[1]["local"]  # each host measured its own scores
  assert all(r["used"] == first["local"] for r in results)  # process 0's, to the last bit
  assert results[0]["decisions"] == results[1]["decisions"]
  assert any(d["a"]["stopped"] or d["b"]["stopped"] for d in results[0]["decisions"])


def test_launch_trains_multitask_then_fine_tunes_a_single_task(finished, data_dir, tmp_path):
  """The README's commands (tiny model and data appended): multi-task training from a
  checkpoint, then one task alone from its result."""
  init, _ = finished
  flags = [f"--config.{k}={v}" for k, v in _overrides(data_dir).items()]
  flags += [f"--config.multitask.tasks.{k}.batch_size={b}" for k, b in TASK_SIZES.items()]
  flags += ["--config.num_train_steps=2"]
  multi, single = tmp_path / "multitask", tmp_path / "vqa_from_multitask"
  proc = launch("--config", "configs/multitask_synthetic.py", "--workdir", str(multi),
                f"--config.init_checkpoint={init}", *flags,
                "--config.multitask.order=('vqa','refcoco_plus')")
  out = proc.communicate(timeout=900)[0]
  assert proc.returncode == 0, out[-3000:]
  assert "loaded " in out and "passes: vqa 8, refcoco_plus 4" in out
  assert json.loads((multi / "eval_metrics.json").read_text())["iteration"] == 2
  assert "held-out evaluation at iteration 2:\n  refcoco_plus/" in out  # trainer's summary
  assert f"eval:        {multi}/eval_metrics.json\nexport:      {multi}/export" in out
  proc = launch("--config", "configs/multitask_synthetic.py", "--workdir", str(single),
                f"--config.init_checkpoint={multi}", '--config.multitask.order=("vqa",)',
                *flags)
  out = proc.communicate(timeout=900)[0]
  assert proc.returncode == 0, out[-3000:]
  keys = set(json.loads((single / "eval_metrics.json").read_text()))
  assert {"iteration", "vqa/validation/accuracy", "vqa/stopped", "vqa/best"} <= keys
  assert not any(k.startswith("refcoco_plus/") for k in keys)

def test_paper_multitask_config_lists_four_tasks_with_their_settings():
  from configs import multitask as multitask_config  # pylint: disable=g-import-not-at-top
  c = multitask_config.get_config()
  specs = multitask.task_specs(c)
  assert [(s.name, s.batch_size, s.learning_rate) for s in specs] == [
      ("vqa", 256, 4e-5), ("vcr", 64, 2e-5), ("refcoco_plus", 256, 4e-5),
      ("retrieval", 64, 2e-5)]
  assert multitask.loss_scales(specs) == [2.0, 1.0, 2.0, 1.0]
  assert c.model.task_specific_tokens and c.task.head_variant == "12in1"
  assert c.init.required


def test_run_without_vqa_keeps_the_checkpoints_vqa_head(finished, data_dir):
  """Fine-tuning RefCOCO+ alone from a multi-task model: the (unused) VQA head keeps the
  checkpoint's size, so every tensor loads."""
  workdir, _ = finished
  vocab = train_data.open_dataset(
      multitask.single_task_config(tiny_multitask_config(data_dir),
                                   multitask.task_specs(tiny_multitask_config(data_dir))[0]),
      "train").metadata["answer_vocab"]
  assert multitask._checkpoint_answers(str(workdir)) == len(vocab)
  assert multitask._checkpoint_answers(str(workdir / "export")) == len(vocab)
  assert multitask._checkpoint_answers("") is None


def test_non_finite_loss_stops_before_the_checkpoint_is_saved(data_dir, tmp_path):
  """Losses not yet logged are checked before every save: a diverged state is never saved."""
  config = tiny_multitask_config(data_dir, order=("refcoco_plus",), num_train_steps=3,
                                 checkpoint_every_steps=2, log_every_steps=10)
  config.multitask.tasks.refcoco_plus.learning_rate = 1e30
  config.multitask.head_learning_rate = 1e30
  with pytest.raises(NonFiniteLossError, match="refcoco_plus by iteration 2"):
    multitask.train_and_evaluate(config, str(tmp_path))
  assert not (tmp_path / "checkpoints" / "2").exists()
  assert not (tmp_path / "eval_metrics.json").exists()
