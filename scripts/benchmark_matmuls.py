"""XLA:CPU against PyTorch on the train step's largest matmul groups, side by side.

  python scripts/benchmark_matmuls.py        # needs torch (the throwaway environment of
                                             # README "Performance")

The base model's step at batch 8 spends most of its matmul time in two groups of shapes:
the text stream's feed-forward (288 tokens x 768 <-> 3072) and the visual / co-attention
1024 x 1024 projections (296 tokens). For each, the three matmuls of a dense layer's
forward and backward — ``y = x W``, ``dx = dy Wᵀ``, ``dW = xᵀ dy`` — are timed in XLA (one jitted
function per matmul, as XLA:CPU runs them: YNNPACK for the first two, Eigen for the transposed
``dW``) and in torch, alternating, with every core; prints GFLOP/s per matmul and side.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

GROUPS = {  # name: (tokens, in width, out width)
    "text feed-forward in (288x768 @ 768x3072)": (288, 768, 3072),
    "text feed-forward out (288x3072 @ 3072x768)": (288, 3072, 768),
    "visual / co-attention 1024x1024 (296 tokens)": (296, 1024, 1024),
}


def _median_seconds(fn, repeats: int) -> float:
  fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--repeats", type=int, default=50)
  args = parser.parse_args()
  import torch  # pylint: disable=import-outside-toplevel
  torch.set_num_threads(os.cpu_count())
  rng = np.random.default_rng(0)
  jax_ops = {"y = x W": jax.jit(lambda x, w, dy: x @ w),
             "dx = dy Wt": jax.jit(lambda x, w, dy: dy @ w.T),
             "dW = xt dy": jax.jit(lambda x, w, dy: x.T @ dy)}
  torch_ops = {"y = x W": lambda x, w, dy: x @ w, "dx = dy Wt": lambda x, w, dy: dy @ w.T,
               "dW = xt dy": lambda x, w, dy: x.T @ dy}
  print("| group | matmul | XLA GFLOP/s | torch GFLOP/s | XLA / torch |")
  print("|---|---|---|---|---|")
  for group, (m, k, n) in GROUPS.items():
    arrays = [rng.standard_normal(s, dtype=np.float32) for s in ((m, k), (k, n), (m, n))]
    on_jax = [jnp.asarray(a) for a in arrays]
    on_torch = [torch.from_numpy(a) for a in arrays]
    flops = 2 * m * k * n
    for name in jax_ops:
      xla = _median_seconds(lambda: jax_ops[name](*on_jax).block_until_ready(), args.repeats)
      ref = _median_seconds(lambda: torch_ops[name](*on_torch), args.repeats)
      print(f"| {group} | {name} | {flops / xla / 1e9:.0f} | {flops / ref / 1e9:.0f} | "
            f"{ref / xla:.2f} |")


if __name__ == "__main__":
  main()
