"""A tiny pretraining config on a tiny synthetic dataset, shared by the training tests.

The same overrides serve in-process runs (``tiny_config``) and ``launch.py`` subprocesses
(``tiny_flags``), so both train the very same model.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

from configs import pretrain_synthetic

ROOT = pathlib.Path(__file__).parents[1]

TINY = {
    "model.hidden_size": 32, "model.num_attention_heads": 2, "model.intermediate_size": 48,
    "model.v_hidden_size": 24, "model.v_num_attention_heads": 2,
    "model.v_intermediate_size": 40, "model.bi_hidden_size": 16,
    "model.bi_num_attention_heads": 2, "model.v_feature_size": 16,
    "model.num_hidden_layers": 3, "model.v_num_hidden_layers": 2,
    "model.v_biattention_id": (0, 1), "model.t_biattention_id": (1, 2),
    "model.initializer_range": 0.02, "model.hidden_dropout_prob": 0.1,
    "model.v_hidden_dropout_prob": 0.1, "model.attention_probs_dropout_prob": 0.1,
    "model.v_attention_probs_dropout_prob": 0.1, "data.worker_count": 0,
    "masking.masked_loss_on_mismatch": True,
    "data.synthetic.feature_dim": 16, "data.synthetic.num_train": 128,
    "data.synthetic.num_validation": 48, "data.synthetic.num_test": 16,
    "data.max_text_len": 16, "data.num_visual_tokens": 13,
    "batch_size": 16, "num_train_steps": 6, "log_every_steps": 2, "eval_every_steps": 0,
    "checkpoint_every_steps": 4, "eval.num_batches": 2, "eval.retrieval_images": 8,
    "optimizer.learning_rate": 3e-3, "optimizer.eps": 1e-6,
}


def _set(config, key: str, value) -> None:
  *parents, leaf = key.split(".")
  for p in parents:
    config = config[p]
  config[leaf] = value


def tiny_config(data_dir, **overrides):
  """The demo config shrunk by ``TINY``, reading/building data in ``data_dir``."""
  c = pretrain_synthetic.get_config()
  for key, value in {**TINY, "data.data_dir": str(data_dir), **overrides}.items():
    _set(c, key, value)
  return c


def tiny_flags(data_dir, workdir, *extra: str) -> list[str]:
  """``launch.py`` arguments equal to ``tiny_config(data_dir)``, then ``extra``."""
  overrides = {**TINY, "data.data_dir": str(data_dir)}
  return (["--config", "configs/pretrain_synthetic.py", "--workdir", str(workdir)]
          + [f"--config.{k}={v}" for k, v in overrides.items()] + list(extra))


def launch(*args: str, env: dict | None = None) -> subprocess.Popen:
  """Starts ``python launch.py ARGS`` from the repository root (output in ``stdout``)."""
  full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
  return subprocess.Popen([sys.executable, "launch.py", *args], cwd=ROOT, env=full_env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def tiny_task_config(task: str, data_dir, variant: str = "no_pretraining", **overrides):
  """The synthetic twin of ``task`` with the ``TINY`` model and data, quick to train."""
  from configs import synthetic  # pylint: disable=g-import-not-at-top
  c = synthetic.synthetic_task_config(task, variant)
  task_sizes = {"batch_size": 8, "num_train_steps": 12, "log_every_steps": 4,
                "checkpoint_every_steps": 100, "eval.batch_size": 16,
                "eval.retrieval_images": 8, "eval.retrieval_captions_per_image": 1}
  for key, value in {**TINY, **task_sizes, "data.data_dir": str(data_dir),
                     **overrides}.items():
    _set(c, key, value)
  return c
