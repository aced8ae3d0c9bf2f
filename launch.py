"""The single entry point of vilbert_jax: train, eval or benchmark, from a config file.

    python launch.py --config configs/pretrain_synthetic.py --workdir /tmp/vilbert_demo
    python launch.py --config configs/pretrain_cc.py --workdir /ckpt/cc --config.batch_size=256
    python launch.py --config configs/pretrain_cc.py --config.mode=benchmark
    python launch.py --config configs/vqa_synthetic.py --workdir /tmp/vqa_synthetic \
        --config.init_checkpoint=/tmp/vilbert_demo          # fine-tune a task (configs/<task>.py)
    python launch.py --config configs/vqa.py --workdir /ckpt/vqa --config.mode=eval

``--config.<key>=<value>`` overrides any field; an unknown key is an error that names it.
Multi-host: run the same command on every host (SLURM/Open MPI/Cloud TPU are detected), or
pass ``--config.distributed.coordinator_address=host:port --config.distributed.num_processes=N
--config.distributed.process_id=i``.
"""

import logging
import os

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
  import jax  # pylint: disable=g-import-not-at-top
  if not jax.config.jax_compilation_cache_dir:  # persistent cache unless set by the environment
    jax.config.update("jax_compilation_cache_dir",
                      os.path.expanduser("~/.cache/vilbert_jax/jax_compilation_cache"))
  from vilbert_jax.train import distributed  # pylint: disable=g-import-not-at-top
  distributed.maybe_initialize(config)
  absl_logging.set_verbosity(absl_logging.WARNING)  # Orbax/TFDS chatter off the console.
  logging.getLogger("absl").addFilter(_DropNotices())
  logging.getLogger("vilbert_jax").setLevel(logging.INFO)
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


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
