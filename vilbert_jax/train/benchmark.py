"""Benchmark mode: times the compiled pretraining step on synthetic batches of the configured
shapes and prints one JSON line.

Model FLOPs (``model_flops_per_example``) are counted analytically: 2 FLOPs per multiply-add
of every matmul in the forward pass (projections, FFNs, attention scores and context, the
region-feature embedding, poolers and the three heads with full-length logits), times 3 for
forward + backward. Embedding lookups, LayerNorm, softmax and elementwise work are not
counted. MFU = achieved model FLOP/s / the device's peak for the compute dtype.
"""

from __future__ import annotations

import json
import statistics
import time
from typing import Any, Optional

import jax
import ml_collections
import numpy as np

from vilbert_jax.config import ViLBERTConfig
from vilbert_jax.train import data as train_data
from vilbert_jax.train import trainer

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


def run(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """Compiles and times the train step; prints and returns the result record."""
  bench = config.benchmark
  text_len, num_visual = config.data.max_text_len, config.data.num_visual_tokens
  config = ml_collections.ConfigDict(config.to_dict())
  config.batch_size = bench.batch_size
  config.num_train_steps = bench.warmup_steps + bench.steps
  r = trainer.setup(config, num_examples=1)
  batch = synthetic_batch(r.cfg, bench.batch_size, text_len, num_visual)
  global_batch = train_data.to_global(batch, r.mesh)
  step_fn = r.jit_train_step()
  t0 = time.perf_counter()
  with jax.set_mesh(r.mesh):
    compiled = step_fn.lower(r.state, global_batch).compile()
  compile_s = time.perf_counter() - t0
  memory = compiled.memory_analysis()
  state, times = r.state, []
  for i in range(bench.warmup_steps + bench.steps):
    t0 = time.perf_counter()
    state, metrics = compiled(state, global_batch)
    jax.block_until_ready(metrics)
    if i >= bench.warmup_steps:
      times.append(time.perf_counter() - t0)
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
      "compile_time_s": compile_s,
      "loss": float(metrics["loss/total"]),
      "temp_memory_bytes_per_device": getattr(memory, "temp_size_in_bytes", None),
      "argument_memory_bytes_per_device": getattr(memory, "argument_size_in_bytes", None),
      "peak_memory_bytes": (device.memory_stats() or {}).get("peak_bytes_in_use"),
  }
  print(json.dumps(result))
  return result
