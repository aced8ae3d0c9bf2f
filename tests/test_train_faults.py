"""Training under faults and its finer contracts: non-finite losses, SIGTERM, stale evaluation
results, the BERT learning-rate multiplier, gradient accumulation."""

import json
import os
import pathlib
import signal
import types

import flax
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
import safetensors.numpy

from train_utils import tiny_config
from vilbert_jax.convert.hf_bert import bert_rules
from vilbert_jax.train import benchmark, trainer
from vilbert_jax.train import data as train_data
from vilbert_jax.train.metric_writers import MetricWriter

# Two log lines and no retrieval: these runs test the loop, not the evaluation.
QUICK = {"num_train_steps": 8, "log_every_steps": 4, "checkpoint_every_steps": 100,
         "eval.retrieval_images": 0, "eval.num_batches": 1}
# Warmup is 1 step (lr 0), so the step-2 update is the first at 1e30: params overflow and the
# loss of step 3 is the first non-finite one.
EXPLODING = {**QUICK, "optimizer.learning_rate": 1e30}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("tfds")


def _saved_steps(workdir):
  directory = pathlib.Path(workdir) / "checkpoints"
  return sorted(int(p.name) for p in directory.glob("*") if p.name.isdigit())


def _params_at(workdir, step):
  with ocp.StandardCheckpointer() as ckpt:
    state = ckpt.restore(pathlib.Path(workdir).absolute() / "checkpoints" / str(step) / "state")
  return flax.traverse_util.flatten_dict(state["params"], sep="/")


def test_non_finite_loss_stops_the_loop_before_a_checkpoint_holds_it(data_dir, tmp_path):
  """Checkpoint every 3 steps, check at log lines every 4: the step-3 save must check first."""
  config = tiny_config(data_dir, **{**EXPLODING, "checkpoint_every_steps": 3})
  with pytest.raises(trainer.NonFiniteLossError, match="non-finite loss at step 3"):
    trainer.train_and_evaluate(config, str(tmp_path))
  assert _saved_steps(tmp_path) == []
  logged = (tmp_path / "metrics.jsonl").read_text() if (tmp_path / "metrics.jsonl").exists() else ""
  assert logged == ""  # the first log line (step 4) is never reached


def test_sigterm_with_a_pending_non_finite_loss_saves_nothing(data_dir, tmp_path, monkeypatch):
  """SIGTERM after the first non-finite step: the stop save checks the pending losses."""
  jit_train_step = trainer.Run.jit_train_step

  def jit_and_signal_at_step_3(run, donate=True):
    step_fn = jit_train_step(run, donate)

    def step(state, batch):
      state, metrics = step_fn(state, batch)
      if int(state.step) == 3:
        os.kill(os.getpid(), signal.SIGTERM)
      return state, metrics
    return step
  monkeypatch.setattr(trainer.Run, "jit_train_step", jit_and_signal_at_step_3)
  with pytest.raises(trainer.NonFiniteLossError, match="non-finite loss at step 3"):
    trainer.train_and_evaluate(tiny_config(data_dir, **EXPLODING), str(tmp_path))
  assert _saved_steps(tmp_path) == []


class _Evaluator:
  def __init__(self, fail: bool):
    self.fail = fail

  def run(self, params):
    del params
    if self.fail:
      raise RuntimeError("evaluation broke")
    return {"accuracy": 0.5}

  def write_predictions(self, directory):
    del directory
    return []


def test_failed_re_evaluation_leaves_no_stale_eval_metrics(tmp_path):
  state = types.SimpleNamespace(params={}, step=np.int32(7))
  writer = MetricWriter(tmp_path)
  trainer._final_evaluation(_Evaluator(fail=False), state, tmp_path, writer)  # pylint: disable=protected-access
  assert json.loads((tmp_path / "eval_metrics.json").read_text()) == {"step": 7,
                                                                      "accuracy": 0.5}
  with pytest.raises(RuntimeError, match="evaluation broke"):
    trainer._final_evaluation(_Evaluator(fail=True), state, tmp_path, writer)  # pylint: disable=protected-access
  writer.close()
  assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl", "tensorboard"]


def _fake_bert(config, path):
  """A BERT checkpoint (random values, HF key names, MLM head) that fits ``config``'s text
  stream; returns the ``{flax path: value}`` it holds."""
  run = trainer.setup(config, num_examples=64, abstract=True)
  shapes = flax.traverse_util.flatten_dict(run.state.params)
  rng = np.random.default_rng(0)
  tensors, expected = {}, {}
  for rule in bert_rules(run.cfg, with_mlm_head=True):
    value = rng.normal(size=shapes[rule.flax_path].shape).astype(np.float32)
    expected["/".join(rule.flax_path)] = value
    tensors[rule.key] = np.ascontiguousarray(value.T) if rule.transpose else value
  safetensors.numpy.save_file(tensors, str(path))
  return expected


@pytest.mark.parametrize("single_stream", [False, True], ids=["two_stream", "single_stream"])
def test_bert_lr_multiplier_applies_to_exactly_what_was_loaded(data_dir, tmp_path,
                                                               single_stream):
  """Multiplier 0: every parameter loaded from BERT (embeddings, all text layers, MLM head,
  the single-stream pooler) stays exactly as loaded; the rest trains."""
  config = tiny_config(data_dir, **{**QUICK, "num_train_steps": 2, "log_every_steps": 1,
                                    "checkpoint_every_steps": 1,
                                    "model.single_stream": single_stream,
                                    "init.bert_lr_multiplier": 0.0})
  bert = tmp_path / "bert.safetensors"
  loaded = _fake_bert(config, bert)
  config.init.bert_checkpoint = str(bert)
  workdir = tmp_path / "run"
  trainer.train_and_evaluate(config, str(workdir))
  report = json.loads((workdir / "initialization.json").read_text())
  assert sorted(report["loaded"]) == sorted(loaded)
  layers = "backbone/layers_" if single_stream else "backbone/encoder/text_layers_"
  assert any(p.startswith(layers) for p in loaded)
  after_1, after_2 = _params_at(workdir, 1), _params_at(workdir, 2)
  for path, value in loaded.items():
    np.testing.assert_array_equal(after_2[path], value, err_msg=path)
  trained = [p for p in after_2 if p not in loaded
             and not np.array_equal(after_1[p], after_2[p])]
  assert "region_head/decoder/kernel" in trained
