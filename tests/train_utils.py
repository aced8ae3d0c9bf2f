"""A tiny pretraining config on a tiny synthetic dataset, shared by the training tests."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

from configs import pretrain_synthetic

ROOT = pathlib.Path(__file__).parents[1]


def tiny_config(data_dir: str, **overrides):
  c = pretrain_synthetic.get_config()
  c.model.update(hidden_size=32, num_attention_heads=2, intermediate_size=48, v_hidden_size=24,
                 v_num_attention_heads=2, v_intermediate_size=40, bi_hidden_size=16,
                 bi_num_attention_heads=2, v_feature_size=16)
  c.data.data_dir = str(data_dir)
  c.data.synthetic.update(feature_dim=16, num_train=128, num_validation=48, num_test=16)
  c.data.max_text_len = 16
  c.data.num_visual_tokens = 13
  c.batch_size = 16
  c.num_train_steps = 6
  c.log_every_steps = 2
  c.eval_every_steps = 0
  c.checkpoint_every_steps = 4
  c.eval.num_batches = 2
  c.eval.retrieval_images = 8
  c.optimizer.learning_rate = 3e-3
  for key, value in overrides.items():
    target = c
    *parents, leaf = key.split(".")
    for p in parents:
      target = target[p]
    target[leaf] = value
  return c


def launch(*args: str, env: dict | None = None, timeout: int = 300, **popen) -> subprocess.Popen:
  """Starts ``python launch.py ARGS`` from the repository root."""
  full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
  return subprocess.Popen([sys.executable, "launch.py", *args], cwd=ROOT, env=full_env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def tiny_flags(data_dir: str, workdir: str, *extra: str) -> list[str]:
  """Command-line overrides equal to ``tiny_config`` for ``launch.py``."""
  c = tiny_config(data_dir)
  flags = ["--config", "configs/pretrain_synthetic.py", "--workdir", str(workdir)]
  for key in ("hidden_size", "num_attention_heads", "intermediate_size", "v_hidden_size",
              "v_num_attention_heads", "v_intermediate_size", "bi_hidden_size",
              "bi_num_attention_heads", "v_feature_size"):
    flags.append(f"--config.model.{key}={c.model[key]}")
  for key in ("feature_dim", "num_train", "num_validation", "num_test"):
    flags.append(f"--config.data.synthetic.{key}={c.data.synthetic[key]}")
  for key in ("data.data_dir", "data.max_text_len", "data.num_visual_tokens", "batch_size",
              "num_train_steps", "log_every_steps", "eval_every_steps",
              "checkpoint_every_steps", "eval.num_batches", "eval.retrieval_images",
              "optimizer.learning_rate"):
    value = c
    for part in key.split("."):
      value = value[part]
    flags.append(f"--config.{key}={value}")
  return flags + list(extra)
