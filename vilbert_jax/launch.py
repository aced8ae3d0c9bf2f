"""The single entry point of vilbert_jax: train, eval or benchmark, from a config file.

Run as ``python launch.py`` in the checkout or ``vilbert-launch`` once installed (same flags):

    python launch.py --config configs/pretrain_synthetic.py --workdir /tmp/vilbert_demo
    python launch.py --config configs/pretrain_cc.py --workdir /ckpt/cc --config.batch_size=256
    python launch.py --config configs/pretrain_cc.py --config.mode=benchmark
    python launch.py --config configs/vqa_synthetic.py --workdir /tmp/vqa_synthetic \
        --config.init_checkpoint=/tmp/vilbert_demo          # fine-tune a task (configs/<task>.py)
    python launch.py --config configs/vqa.py --workdir /ckpt/vqa --config.mode=eval
    python launch.py --config configs/multitask.py --workdir /ckpt/multitask \
        --config.init_checkpoint=/ckpt/cc              # several tasks at once (12-in-1)

``--config.<key>=<value>`` overrides any field; an unknown key is an error that names it.
Multi-host: run the same command on every host (SLURM/Open MPI/Cloud TPU are detected), or
pass ``--config.distributed.coordinator_address=host:port --config.distributed.num_processes=N
--config.distributed.process_id=i``.
"""

import logging
import os
import sys
from importlib import resources
from typing import List

from absl import app
from absl import flags
from absl import logging as absl_logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config (configs/*.py).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints, metrics and TensorBoard files.")
_MODES = ("train", "eval", "benchmark")


class _DropNotices(logging.Filter):
  """Drops TFDS's "Using custom data configuration" notice: it is printed each time a split is
  opened from a config built with overrides (e.g. the demo's feature_dim=64), and is not a
  problem to act on."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("Using custom data configuration")


def main(argv):
  del argv
  config = _CONFIG.value
  if config.mode not in _MODES:
    raise app.UsageError(f"--config.mode={config.mode!r}: choose from {_MODES}")
  if config.keep_freed_host_memory:  # before JAX starts its threads
    from vilbert_jax.train import host_memory  # pylint: disable=g-import-not-at-top
    host_memory.keep_freed_memory()
  import jax  # pylint: disable=g-import-not-at-top
  if not jax.config.jax_compilation_cache_dir:  # persistent cache unless set by the environment
    jax.config.update("jax_compilation_cache_dir",
                      os.path.expanduser("~/.cache/vilbert_jax/jax_compilation_cache"))
  from vilbert_jax.train import distributed  # pylint: disable=g-import-not-at-top
  distributed.maybe_initialize(config)
  absl_logging.set_verbosity(absl_logging.WARNING)  # Orbax/TFDS chatter off the console.
  logging.getLogger("absl").addFilter(_DropNotices())
  logging.getLogger("vilbert_jax").setLevel(logging.INFO)
  if "multitask" in config:
    if config.mode != "train":
      raise app.UsageError("a multi-task config trains (and evaluates each task once per pass "
                           "and at the end); evaluate a task with its own config and "
                           "--config.init_checkpoint=<multi-task workdir>")
    if not _WORKDIR.value:
      raise app.UsageError("--workdir is required")
    from vilbert_jax.train import multitask  # pylint: disable=g-import-not-at-top
    multitask.train_and_evaluate(config, _WORKDIR.value)
    return
  if config.mode == "benchmark":
    from vilbert_jax.train import benchmark  # pylint: disable=g-import-not-at-top
    benchmark.run(config)
    return
  if not _WORKDIR.value:
    raise app.UsageError(f"--workdir is required for mode={config.mode}")
  from vilbert_jax.train import trainer  # pylint: disable=g-import-not-at-top
  if config.mode == "train":
    trainer.train_and_evaluate(config, _WORKDIR.value)
  else:
    trainer.evaluate_checkpoint(config, _WORKDIR.value)


def resolve_config_paths(argv: List[str]) -> List[str]:
  """``--config configs/NAME.py[:arg]`` -> the installed config file when ``configs/`` is not
  under the working directory, so the documented commands run from any directory."""
  out = list(argv)
  for i, arg in enumerate(out):
    if arg == "--config" and i + 1 < len(out):
      out[i + 1] = _installed_config(out[i + 1])
    elif arg.startswith("--config="):
      out[i] = "--config=" + _installed_config(arg[len("--config="):])
  return out


def _installed_config(value: str) -> str:
  path, sep, arg = value.partition(":")
  if os.path.exists(path) or not path.startswith("configs/"):
    return value
  installed = resources.files("configs").joinpath(path[len("configs/"):])
  return os.fspath(installed) + sep + arg if installed.is_file() else value


def run() -> None:
  """Console entry point (``vilbert-launch``)."""
  flags.mark_flags_as_required(["config"])
  app.run(main, argv=resolve_config_paths(sys.argv))


if __name__ == "__main__":
  run()
