"""Benchmark mode: times the compiled pretraining step on synthetic batches of the configured
shapes and prints one JSON line.

With ``benchmark.memory_estimate`` the line also holds the ahead-of-time memory estimate per
device of the train step at batch 512 on 8 devices (``memory_estimate``), compiled for the
configured mesh from shapes alone; without 8 devices it runs in a subprocess on 8 host (CPU)
devices, so it is the CPU compiler's estimate (buffer sizes carry over, fusion choices vary;
XLA:CPU's buffer assignment does not reflect ``model.remat``). The line also holds the
activation bytes per example the forward pass saves for the backward pass, counted from the
jaxpr (``saved_activation_bytes``): the same on every backend, and what ``remat`` reduces.

Model FLOPs (``model_flops_per_example``) are counted analytically: 2 FLOPs per multiply-add
of every matmul in the forward pass (projections, FFNs, attention scores and context, the
region-feature embedding, poolers and the three heads with full-length logits), times 3 for
forward + backward. Embedding lookups, LayerNorm, softmax and elementwise work are not
counted. MFU = achieved model FLOP/s / the device's peak for the compute dtype.
"""

from __future__ import annotations

import json
import os
import pathlib
import statistics
import subprocess
import sys
import time
from typing import Any, Optional

import jax
import ml_collections
import numpy as np

from vilbert_jax import sharding
from vilbert_jax.config import ViLBERTConfig
from vilbert_jax.train import data as train_data
from vilbert_jax.train import host_memory
from vilbert_jax.train import trainer

MEMORY_ESTIMATE_BATCH = 512  # global batch of the memory estimate (the paper's)
MEMORY_ESTIMATE_DEVICES = 8

# Dense peak FLOP/s per chip by (device kind prefix, compute dtype); None when unknown (CPU).
PEAK_FLOPS = {
    ("NVIDIA H100", "bfloat16"): 989e12, ("NVIDIA H100", "float32"): 494.5e12,  # TF32
    ("NVIDIA H200", "bfloat16"): 989e12, ("NVIDIA H200", "float32"): 494.5e12,
    ("NVIDIA A100", "bfloat16"): 312e12, ("NVIDIA A100", "float32"): 156e12,
    ("TPU v4", "bfloat16"): 275e12, ("TPU v5 lite", "bfloat16"): 197e12,
    ("TPU v5p", "bfloat16"): 459e12, ("TPU v6 lite", "bfloat16"): 918e12,
}


def _trm_flops(length: int, width: int, mlp: int) -> int:
  projections = 4 * length * width * width + 2 * length * width * mlp
  attention = 2 * length * length * width  # scores + context
  return 2 * (projections + attention)


def model_flops_per_example(cfg: ViLBERTConfig, text_len: int, num_visual: int) -> int:
  """Analytic FLOPs of one example's train step (forward + backward = 3 x forward)."""
  t, r = text_len, num_visual
  dt, dv, db = cfg.hidden_size, cfg.v_hidden_size, cfg.bi_hidden_size
  ft, fv = cfg.intermediate_size, cfg.v_intermediate_size
  if cfg.single_stream:
    n = t + r
    forward = (cfg.num_hidden_layers * _trm_flops(n, dt, ft)
               + 2 * r * (cfg.v_feature_size + 5) * dt + 2 * dt * dt
               + 2 * t * (dt * dt + dt * cfg.vocab_size)
               + 2 * r * (dt * dt + dt * cfg.v_target_size) + 2 * dt * 2)
    return 3 * forward
  coattention = 2 * (3 * r * dv * db + 3 * t * dt * db + r * db * dv + t * db * dt
                     + 2 * r * dv * fv + 2 * t * dt * ft + 2 * 2 * t * r * db)
  forward = (2 * r * (cfg.v_feature_size + 5) * dv
             + cfg.num_hidden_layers * _trm_flops(t, dt, ft)
             + cfg.v_num_hidden_layers * _trm_flops(r, dv, fv)
             + cfg.num_coattention_layers * coattention
             + 2 * (dt * db + dv * db)
             + 2 * t * (dt * dt + dt * cfg.vocab_size)
             + 2 * r * (dv * dv + dv * cfg.v_target_size) + 2 * db * 2)
  return 3 * forward


def peak_flops(device: jax.Device, dtype: str) -> Optional[float]:
  return next((v for (kind, dt), v in PEAK_FLOPS.items()
               if device.device_kind.startswith(kind) and dt == dtype), None)


def synthetic_batch(cfg: ViLBERTConfig, batch: int, text_len: int, num_visual: int,
                    seed: int = 0) -> dict[str, np.ndarray]:
  """A pretraining batch with the masking rates of the paper, from random numbers."""
  rng = np.random.default_rng(seed)
  regions = num_visual - 1
  lm_labels = rng.integers(0, cfg.vocab_size, (batch, text_len)).astype(np.int32)
  lm_labels[rng.random((batch, text_len)) > 0.15] = -1
  target = rng.random((batch, regions, cfg.v_target_size)).astype(np.float32)
  return {
      "input_ids": rng.integers(0, cfg.vocab_size, (batch, text_len)).astype(np.int32),
      "token_type_ids": np.zeros((batch, text_len), np.int32),
      "attention_mask": np.ones((batch, text_len), np.int32),
      "image_feat": rng.random((batch, num_visual, cfg.v_feature_size)).astype(np.float32),
      "image_loc": rng.random((batch, num_visual, 5)).astype(np.float32),
      "image_mask": np.ones((batch, num_visual), np.int32),
      "masked_lm_labels": lm_labels,
      "image_label": np.where(rng.random((batch, regions)) < 0.15, 1, -1).astype(np.int32),
      "image_target": target / target.sum(-1, keepdims=True),
      "alignment_label": rng.integers(0, 2, batch).astype(np.int32),
  }


def _memory_record(compiled: Any) -> dict[str, Optional[int]]:
  """Per-device bytes from ``compiled.memory_analysis()`` (None where the backend has none)."""
  memory = compiled.memory_analysis()
  sizes = {k: getattr(memory, f"{k}_size_in_bytes", None)
           for k in ("argument", "output", "temp", "alias", "generated_code")}
  if None not in sizes.values():
    # Donated state: outputs alias arguments, so they are counted once.
    sizes["total"] = sizes["argument"] + sizes["output"] - sizes["alias"] + sizes["temp"]
  return {f"{k}_bytes": v for k, v in sizes.items()}


def saved_activation_bytes(loss_fn: Any, params: Any, batch: Any) -> int:
  """Bytes the forward pass of ``loss_fn(params, batch, rng)`` keeps for the backward pass.

  Counted from shapes alone, independent of the backend: the residuals of ``jax.vjp`` in its
  jaxpr, less the parameters and inputs themselves. ``model.remat`` changes exactly this.
  """
  def residuals(p, b):
    return jax.tree.leaves(jax.vjp(lambda q: loss_fn(q, b, jax.random.key(0))[0], p)[1])
  jaxpr = jax.make_jaxpr(residuals)(params, batch).jaxpr
  inputs = {id(v) for v in jaxpr.invars}
  return int(sum(v.aval.size * v.aval.dtype.itemsize for v in jaxpr.outvars
                 if id(v) not in inputs and hasattr(v.aval, "size")))


def memory_estimate(config: ml_collections.ConfigDict, batch_size: int = MEMORY_ESTIMATE_BATCH,
                    num_devices: int = MEMORY_ESTIMATE_DEVICES) -> dict[str, Any]:
  """Compiles the donated train step for ``batch_size`` on ``config.mesh`` over the first
  ``num_devices`` devices from shapes only (nothing is allocated) and returns its memory
  analysis per device (bytes) with the mesh and the compile time."""
  devices = jax.devices()[:num_devices]
  if len(devices) < num_devices:
    raise ValueError(f"memory_estimate needs {num_devices} devices, {len(devices)} available")
  text_len, num_visual = config.data.max_text_len, config.data.num_visual_tokens
  config = ml_collections.ConfigDict(config.to_dict())
  config.batch_size = batch_size
  run = trainer.setup(config, num_examples=batch_size, devices=devices, abstract=True)
  cfg, task, mesh, state = run.cfg, run.task, run.mesh, run.state
  batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype,
                                   sharding=sharding.batch_sharding(mesh, v.ndim))
           for k, v in synthetic_batch(cfg, batch_size, text_len, num_visual).items()
           if k in task.device_keys}
  t0 = time.perf_counter()
  with jax.set_mesh(mesh):
    compiled = run.jit_train_step().lower(state, batch).compile()
  compile_s = time.perf_counter() - t0
  activations = saved_activation_bytes(run.loss_fn, state.params, batch)
  return {"batch_size": batch_size, "num_devices": num_devices,
          "mesh": dict(zip(mesh.axis_names, mesh.devices.shape)),
          "platform": devices[0].platform, "compile_time_s": compile_s,
          **_memory_record(compiled),
          "saved_activation_bytes_per_example": activations // batch_size}


def memory_estimate_with_host_devices(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """``memory_estimate`` here if there are enough devices, else in a subprocess on
  ``MEMORY_ESTIMATE_DEVICES`` host (CPU) devices."""
  if jax.device_count() >= MEMORY_ESTIMATE_DEVICES:
    return memory_estimate(config)
  env = {**os.environ, "JAX_PLATFORMS": "cpu",
         "XLA_FLAGS": (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count="
                       f"{MEMORY_ESTIMATE_DEVICES}").strip()}
  root = pathlib.Path(__file__).parents[2]
  env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
  proc = subprocess.run([sys.executable, "-m", "vilbert_jax.train.benchmark", config.to_json()],
                        env=env, cwd=root, capture_output=True, text=True, check=False)
  if proc.returncode:
    raise RuntimeError(f"memory estimate subprocess failed:\n{proc.stdout}\n{proc.stderr}")
  return json.loads(proc.stdout.strip().splitlines()[-1])


class TimedStep:
  """The compiled train step of ``config.benchmark``'s shapes on one fixed synthetic batch.

  Each call runs one step (state donated and carried over) and returns its wall time (s).
  """

  def __init__(self, config: ml_collections.ConfigDict):
    bench = config.benchmark
    self.text_len, self.num_visual = config.data.max_text_len, config.data.num_visual_tokens
    config = ml_collections.ConfigDict(config.to_dict())
    config.batch_size = bench.batch_size
    config.num_train_steps = bench.warmup_steps + bench.steps
    self.run = trainer.setup(config, num_examples=1)
    batch = synthetic_batch(self.run.cfg, bench.batch_size, self.text_len, self.num_visual)
    self.batch = train_data.to_global(batch, self.run.mesh)
    t0 = time.perf_counter()
    with jax.set_mesh(self.run.mesh):
      self.compiled = self.run.jit_train_step().lower(self.run.state, self.batch).compile()
    self.compile_s = time.perf_counter() - t0
    self.state, self.metrics = self.run.state, None

  def __call__(self) -> float:
    t0 = time.perf_counter()
    self.state, self.metrics = self.compiled(self.state, self.batch)
    jax.block_until_ready(self.metrics)
    return time.perf_counter() - t0


def run(config: ml_collections.ConfigDict, print_result: bool = True) -> dict[str, Any]:
  """Compiles and times the train step; returns (and prints) the result record."""
  bench = config.benchmark
  text_len, num_visual = config.data.max_text_len, config.data.num_visual_tokens
  step = TimedStep(config)
  times = [step() for _ in range(bench.warmup_steps + bench.steps)][bench.warmup_steps:]
  r, compiled, metrics = step.run, step.compiled, step.metrics
  step_s = statistics.median(times)
  flops = model_flops_per_example(r.cfg, text_len, num_visual)
  device = jax.devices()[0]
  achieved = flops * bench.batch_size / step_s
  peak = peak_flops(device, r.cfg.dtype)
  result = {
      "step_time_s": step_s,
      "examples_per_s": bench.batch_size / step_s,
      "model_flops_per_example": flops,
      "tflops_per_s": achieved / 1e12,
      "mfu": None if peak is None else achieved / (peak * jax.device_count()),
      "device": device.device_kind,
      "num_devices": jax.device_count(),
      "batch_size": bench.batch_size,
      "dtype": r.cfg.dtype,
      "compile_time_s": step.compile_s,
      "host_memory_kept": host_memory.applied(),
      "loss": float(metrics["loss/total"]),
      "memory_per_device": _memory_record(compiled),
      "peak_memory_bytes": (device.memory_stats() or {}).get("peak_bytes_in_use"),
  }
  if bench.memory_estimate:
    result["memory_estimate"] = memory_estimate_with_host_devices(config)
  if print_result:
    print(json.dumps(result))
  return result


if __name__ == "__main__":
  # The subprocess of memory_estimate_with_host_devices: argv[1] is the run config as JSON.
  print(json.dumps(memory_estimate(ml_collections.ConfigDict(json.loads(sys.argv[1])))))
