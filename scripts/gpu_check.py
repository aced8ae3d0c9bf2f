"""One call on a GPU machine: bfloat16-vs-float32 numerics, then train-step benchmarks.

    bash scripts/gpu_check.sh            # base model, a few minutes on one H100/H200
    bash scripts/gpu_check.sh --smoke    # tiny model, tiny batches, any machine (CPU)

Prints one JSON line per result:

- ``{"check": "numerics", "variant": ...}``: the base model (random init, deterministic) on a
  synthetic batch of 8 in float32 against ``dtype=bfloat16`` and against
  ``matmul_dtype=bfloat16``: max |diff| of the three heads' logits and each loss.
- ``{"check": "benchmark", ...}``: the line of ``launch.py --config.mode=benchmark`` (step time,
  examples/s, MFU with the analytic FLOP count) of the bfloat16 pretraining step for
  doubling batch sizes until one does not fit, with cuDNN attention (no attention-probability
  dropout), then the explicit attention path (the original's attention dropout) at the
  largest batch that fitted, then that batch with ``remat``, then batch 64 with ``remat``:
  one GPU's share of batch 512 on 8 GPUs (compare ``peak_memory_bytes`` with the batch-64
  line without remat).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import jax
import jax.numpy as jnp

import vilbert_jax as vj
from configs import pretrain_cc
from vilbert_jax import losses as losses_lib
from vilbert_jax.model.inputs import MODEL_INPUTS
from vilbert_jax.train import benchmark

SMOKE_MODEL = dict(hidden_size=64, num_attention_heads=4, intermediate_size=128,
                   num_hidden_layers=2, v_hidden_size=48, v_num_attention_heads=4,
                   v_intermediate_size=56, v_num_hidden_layers=1, bi_hidden_size=32,
                   bi_num_attention_heads=4, v_biattention_id=(0,), t_biattention_id=(1,))


def emit(record: dict[str, Any]) -> None:
  print(json.dumps(record), flush=True)


def numerics(cfg: vj.ViLBERTConfig) -> None:
  """Logit and loss differences of the bfloat16 variants from float32 on one batch."""
  batch = benchmark.synthetic_batch(cfg, 8, 36, 37)
  inputs = [batch[k] for k in MODEL_INPUTS]
  params = jax.jit(vj.ViLBERTForPretraining(cfg).init)(jax.random.key(0), *inputs)["params"]

  def forward(variant_cfg):
    out = jax.jit(vj.ViLBERTForPretraining(variant_cfg).apply)({"params": params}, *inputs)
    losses = losses_lib.pretraining_losses(out, batch["masked_lm_labels"], batch["image_label"],
                                           batch["image_target"], batch["alignment_label"])
    return out, {k: float(v) for k, v in losses.items()}

  reference, reference_losses = forward(cfg)
  for name, variant in (("dtype=bfloat16", cfg.replace(dtype="bfloat16")),
                        ("matmul_dtype=bfloat16", cfg.replace(matmul_dtype="bfloat16"))):
    out, losses = forward(variant)
    record = {"check": "numerics", "variant": name, "device": jax.devices()[0].device_kind}
    for key in ("mlm_logits", "region_logits", "alignment_logits"):
      diff = jnp.abs(getattr(out, key).astype(jnp.float32) - getattr(reference, key))
      record[f"{key}_max_abs_diff"] = float(jnp.max(diff))
    for key, value in losses.items():
      record[f"loss/{key}"] = value
      record[f"loss/{key}_float32"] = reference_losses[key]
    emit(record)


def bench(model: dict[str, Any], batch_size: int, steps: int) -> dict[str, Any] | None:
  """The benchmark-mode record, or None when the batch does not fit in memory."""
  variant = {k: model.get(k, False) for k in ("attention_impl", "remat")}
  config = pretrain_cc.get_config()
  config.model.update(model)
  config.benchmark.update(batch_size=batch_size, steps=steps, warmup_steps=1)
  try:
    result = benchmark.run(config, print_result=False)
  except Exception as e:  # pylint: disable=broad-except
    if "RESOURCE_EXHAUSTED" in str(e) or "out of memory" in str(e).lower():
      emit({"check": "benchmark", "batch_size": batch_size, "fits": False, **variant})
      return None
    raise
  emit({"check": "benchmark", "fits": True, **variant, **result})
  return result


def main(argv: list[str]) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--smoke", action="store_true", help="tiny model and batches (CPU)")
  args = parser.parse_args(argv)
  shrink = SMOKE_MODEL if args.smoke else {}
  numerics(vj.preset("base", **shrink))
  batches = (4, 8) if args.smoke else (64, 128, 256, 512, 1024, 2048)
  steps = 2 if args.smoke else 5
  fused = "auto" if args.smoke else "cudnn"  # cuDNN exists on GPUs only
  model = dict(shrink, dtype="bfloat16", attention_impl=fused, attention_probs_dropout_prob=0.0,
               v_attention_probs_dropout_prob=0.0)
  largest = None
  for batch_size in batches:
    if bench(model, batch_size, steps) is None:
      break
    largest = batch_size
  if largest is None:
    return
  bench(dict(shrink, dtype="bfloat16", attention_impl="explicit"), largest, steps)
  bench(dict(model, remat=True), largest, steps)
  bench(dict(model, remat=True), batches[0], steps)  # per-GPU share of 512 on 8 GPUs


if __name__ == "__main__":
  main(sys.argv[1:])
