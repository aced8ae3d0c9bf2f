"""Where metrics go: ``metrics.jsonl``, TensorBoard event files (no TensorFlow), the console.

Only JAX process 0 writes. ``metrics.jsonl`` holds one JSON object per logged step:
``{"step": int, "split": "train" | "eval", <metric name>: float, ...}``.
"""

from __future__ import annotations

import json
import math
import pathlib
from typing import Mapping

import jax


class MetricWriter:
  """Appends metrics to ``workdir/metrics.jsonl`` and ``workdir/tensorboard/``."""

  def __init__(self, workdir: str | pathlib.Path):
    self.enabled = jax.process_index() == 0
    self.workdir = pathlib.Path(workdir)
    self.jsonl_path = self.workdir / "metrics.jsonl"
    self.tensorboard_dir = self.workdir / "tensorboard"
    if self.enabled:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      self.workdir.mkdir(parents=True, exist_ok=True)
      self._tb = SummaryWriter(str(self.tensorboard_dir))
      self._jsonl = open(self.jsonl_path, "a", encoding="utf-8")

  def write(self, step: int, split: str, metrics: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    values = {k: float(v) for k, v in metrics.items()}
    self._jsonl.write(json.dumps({"step": int(step), "split": split, **values}) + "\n")
    self._jsonl.flush()
    for name, value in values.items():
      if math.isfinite(value):
        # TensorBoard tags allow [A-Za-z0-9_./-]: "R@1" becomes "R_at_1".
        self._tb.add_scalar(f"{split}/{name}".replace("@", "_at_"), value, int(step))
    self._tb.flush()

  def close(self) -> None:
    if self.enabled:
      self._jsonl.close()
      self._tb.close()
