"""The training engine: learning, sharding, exact resume, SIGTERM, benchmark, bad configs."""

import json
import pathlib
import signal
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from train_utils import launch, tiny_config, tiny_flags
from vilbert_jax.train import benchmark, trainer
from vilbert_jax.train import data as train_data


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("tfds")


def _metrics(workdir, split="train"):
  lines = (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()
  return [m for m in map(json.loads, lines) if m["split"] == split]


def _final_params(workdir, step):
  with ocp.StandardCheckpointer() as ckpt:
    state = ckpt.restore(pathlib.Path(workdir).absolute() / "checkpoints" / str(step) / "state")
  return state["params"]


def test_pretraining_learns_and_writes_metrics(data_dir, tmp_path):
  config = tiny_config(data_dir, num_train_steps=40, log_every_steps=5,
                       checkpoint_every_steps=100)
  final = trainer.train_and_evaluate(config, str(tmp_path))
  train = _metrics(tmp_path)
  assert [m["step"] for m in train] == list(range(5, 41, 5))
  first, last = train[0]["loss/total"], train[-1]["loss/total"]
  assert last < first - 0.5, (first, last)
  assert train[-1]["masked_lm_accuracy"] > train[0]["masked_lm_accuracy"]
  for key in ("loss/masked_lm", "loss/masked_region", "loss/alignment", "alignment_accuracy",
              "learning_rate", "grad_norm", "examples_per_s"):
    assert np.isfinite(train[-1][key]), key
  assert final["zero_shot/chance_R@1"] == pytest.approx(100 / 8)
  # The reported retrieval numbers are those of the written rankings (8 captions, 8 images).
  rankings = json.loads((tmp_path / "pretraining_validation_rankings.json").read_text())
  ranks = np.array([r["rank"] for r in rankings])
  assert len(ranks) == 8 and all(r["top_images"][r["rank"] - 1] == r["image_index"]
                                 for r in rankings)
  for k in (1, 5, 10):
    assert final[f"zero_shot/R@{k}"] == pytest.approx(100 * np.mean(ranks <= k))
  assert final["zero_shot/mean_rank"] == pytest.approx(ranks.mean())
  assert json.loads((tmp_path / "eval_metrics.json").read_text()) == {"step": 40, **final}
  assert _metrics(tmp_path, "eval")[-1]["step"] == 40
  assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
  assert (tmp_path / "checkpoints" / "40").is_dir()


def _losses_after_steps(config, devices, steps=3):
  run = trainer.setup(config, num_examples=64, devices=devices)
  batch = benchmark.synthetic_batch(run.cfg, config.batch_size, config.data.max_text_len,
                                    config.data.num_visual_tokens)
  step = run.jit_train_step(donate=False)
  state, losses = run.state, []
  with jax.set_mesh(run.mesh):
    for _ in range(steps):
      state, metrics = step(state, train_data.to_global(batch, run.mesh))
      losses.append(float(metrics["loss/total"]))
  return losses, state.params, jax.device_get(run.state.params)


def test_sharded_run_matches_single_device(data_dir):
  """data x FSDP x tensor parallelism: parameters really split, same losses and parameters."""
  one, params_one, _ = _losses_after_steps(tiny_config(data_dir), jax.devices()[:1])
  config = tiny_config(data_dir)
  config.mesh.update(data=2, fsdp=2, tensor=2)
  many, params_many, _ = _losses_after_steps(config, None)
  # The FFN kernel [text_embed, text_mlp] is split over fsdp (rows) and tensor (columns).
  kernel = params_many["backbone"]["encoder"]["text_layers_0"]["ffn"]["intermediate"]["kernel"]
  assert kernel.sharding.shard_shape(kernel.shape) == (kernel.shape[0] // 2,
                                                       kernel.shape[1] // 2)
  params_one, params_many = jax.device_get((params_one, params_many))
  assert one[-1] < one[0]  # it trains
  np.testing.assert_allclose(many, one, rtol=2e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
               params_many, params_one)


def test_start_gets_the_fresh_params_and_the_state_holds_its_own(data_dir):
  """``setup(start=...)`` (a run from a checkpoint): ``start`` sees exactly the params a fresh
  run starts with; the state then holds what it returns, in the same shardings, with the
  same optimiser state (frozen parameters included)."""
  config = tiny_config(data_dir, **{"optimizer.frozen": (r"^backbone/text_embeddings/",)})
  config.mesh.update(data=2, fsdp=2, tensor=2)
  fresh = trainer.setup(config, num_examples=64)
  seen = []

  def start(cfg, params):
    seen.append(params)
    return jax.tree.map(lambda x: x + 1, params), ()
  started = trainer.setup(config, num_examples=64, start=start)
  jax.tree.map(np.testing.assert_array_equal, seen[0], jax.device_get(fresh.state.params))
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b + 1),
               jax.device_get(started.state.params), seen[0])
  assert jax.tree.structure(started.state) == jax.tree.structure(fresh.state)
  assert started.shardings == fresh.shardings
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), jax.device_get(
      started.state.opt_state), jax.device_get(fresh.state.opt_state))
  for a, s in zip(jax.tree.leaves(started.state), jax.tree.leaves(started.shardings)):
    assert a.sharding == s


def test_frozen_parameters_stay_fixed_on_a_sharded_mesh(data_dir):
  config = tiny_config(data_dir, **{"optimizer.frozen": (r"^backbone/text_embeddings/",)})
  config.mesh.update(data=4, tensor=2)
  _, final, initial = _losses_after_steps(config, None, steps=2)
  final = jax.device_get(final)
  jax.tree.map(np.testing.assert_array_equal, final["backbone"]["text_embeddings"],
               initial["backbone"]["text_embeddings"])
  assert not np.array_equal(final["region_head"]["decoder"]["kernel"],
                            initial["region_head"]["decoder"]["kernel"])


def test_sigterm_saves_and_resume_gives_identical_parameters(data_dir, tmp_path):
  flags = {"num_train_steps": 10, "log_every_steps": 1, "checkpoint_every_steps": 100,
           "eval_every_steps": 0, "eval.retrieval_images": 0}
  uninterrupted = tmp_path / "straight"
  trainer.train_and_evaluate(tiny_config(data_dir, **flags), str(uninterrupted))

  interrupted = tmp_path / "interrupted"
  extra = [f"--config.{k}={v}" for k, v in flags.items()]
  proc = launch(*tiny_flags(data_dir, interrupted, *extra))
  metrics_file = interrupted / "metrics.jsonl"
  deadline = time.time() + 240
  while not (metrics_file.exists() and metrics_file.read_text()) and time.time() < deadline:
    if proc.poll() is not None:
      break
    time.sleep(0.02)
  proc.send_signal(signal.SIGTERM)
  output = proc.communicate(timeout=240)[0]
  assert proc.returncode == 0, output
  assert "received SIGTERM: saved checkpoint at step" in output, output[-2000:]
  stopped_at = int(output.split("saved checkpoint at step ")[1].split(",")[0])
  assert 1 <= stopped_at < 10
  assert (interrupted / "checkpoints" / str(stopped_at)).is_dir()

  trainer.train_and_evaluate(tiny_config(data_dir, **flags), str(interrupted))
  # Every step logged exactly once: the resumed run started at the saved step (a run that
  # retrained from step 0 would log steps 1..stopped_at twice).
  assert [m["step"] for m in _metrics(interrupted)] == list(range(1, 11))
  jax.tree.map(np.testing.assert_array_equal, _final_params(interrupted, 10),
               _final_params(uninterrupted, 10))


def test_benchmark_mode_prints_its_json_line(data_dir, tmp_path):
  proc = launch(*tiny_flags(data_dir, tmp_path, "--config.mode=benchmark",
                            "--config.benchmark.steps=2", "--config.benchmark.warmup_steps=1",
                            "--config.benchmark.memory_estimate=True",
                            "--config.keep_freed_host_memory=True"))
  output = proc.communicate(timeout=240)[0]
  assert proc.returncode == 0, output
  record = json.loads(output.strip().splitlines()[-1])
  for key in ("step_time_s", "examples_per_s", "model_flops_per_example", "tflops_per_s",
              "mfu", "device", "num_devices", "batch_size", "dtype", "compile_time_s"):
    assert key in record, key
  assert record["batch_size"] == 8 and record["num_devices"] == 8 and record["mfu"] is None
  assert record["host_memory_kept"] is True  # launch.py set glibc up before JAX started
  assert record["step_time_s"] > 0 and record["model_flops_per_example"] > 0
  estimate = record["memory_estimate"]  # batch 512 over the 8 test devices, shapes only
  assert (estimate["batch_size"], estimate["num_devices"]) == (512, 8)
  assert 0 < estimate["argument_bytes"] < estimate["total_bytes"]


def test_analytic_flops_of_the_base_model():
  """≈52 GFLOP per example for the base model's train step at 36 tokens / 37 regions."""
  import vilbert_jax as vj  # pylint: disable=g-import-not-at-top
  flops = benchmark.model_flops_per_example(vj.preset("base"), 36, 37)
  assert 50e9 < flops < 54e9, flops


@pytest.mark.parametrize("args,message", [
    (["--config.batch_sizee=3"], "batch_sizee"),
    (["--config.model.v_biattention_id=(0,)"], "same length"),
    (["--config.mode=predict"], "mode='predict'"),
    (["--config.model.hidden_sise=3"], "hidden_sise"),
])
def test_bad_configs_fail_naming_the_key(data_dir, tmp_path, args, message):
  proc = launch(*tiny_flags(data_dir, tmp_path, *args))
  output = proc.communicate(timeout=240)[0]
  assert proc.returncode != 0
  assert message in output, output[-3000:]


def _worker(port, processes, pid, local_devices):
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  env = {k: v for k, v in __import__("os").environ.items() if k != "XLA_FLAGS"}
  return subprocess.Popen([sys.executable, str(pathlib.Path(__file__).parent /
                                               "distributed_worker.py"),
                           str(port), str(processes), str(pid), str(local_devices)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


@pytest.mark.multiprocess
def test_two_processes_agree_with_one_on_the_same_global_batch():
  import socket  # pylint: disable=g-import-not-at-top
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  workers = [_worker(port, 2, pid, 2) for pid in range(2)]
  outputs = [w.communicate(timeout=300)[0] for w in workers]
  assert all(w.returncode == 0 for w in workers), outputs
  two = json.loads(outputs[0].strip().splitlines()[-1])
  single = _worker(0, 1, 0, 4)
  one = json.loads(single.communicate(timeout=300)[0].strip().splitlines()[-1])
  assert (two["processes"], two["devices"]) == (2, 4)
  assert (one["processes"], one["devices"]) == (1, 4)
  np.testing.assert_allclose(two["losses"], one["losses"], rtol=1e-5)


def test_non_finite_loss_stops_naming_the_step():
  history = [{"loss/total": 1.0, "loss/masked_lm": 0.5},
             {"loss/total": float("nan"), "loss/masked_lm": float("nan")}]
  with pytest.raises(trainer.NonFiniteLossError, match="non-finite loss at step 8"):
    trainer._check_finite(history, first_step=7)  # pylint: disable=protected-access
  trainer._check_finite(history[:1], first_step=7)  # pylint: disable=protected-access


def test_initial_params_overlay_reports_loaded_fresh_and_ignored():
  from vilbert_jax.train.initialization import overlay_params  # pylint: disable=g-import-not-at-top
  fresh = {"backbone": {"w": np.zeros(2)}, "vqa_head": {"w": np.zeros(3)}}
  loaded = {"backbone": {"w": np.ones(2)}, "masked_lm_head": {"bias": np.ones(4)}}
  params, report = overlay_params(fresh, loaded, "ckpt")
  np.testing.assert_array_equal(params["backbone"]["w"], 1.0)
  np.testing.assert_array_equal(params["vqa_head"]["w"], 0.0)
  assert report.loaded == ("backbone/w",) and report.fresh == ("vqa_head/w",)
  assert report.ignored == ("masked_lm_head/bias",)
  with pytest.raises(ValueError, match="backbone/w: checkpoint"):
    overlay_params(fresh, {"backbone": {"w": np.ones(3)}}, "ckpt")
