"""A converted or exported model on disk: Orbax params plus the config that built them.

Layout of ``DIR``::

    DIR/params/          Orbax checkpoint of the Flax params tree (float arrays)
    DIR/model.json       {"config": ViLBERTConfig fields, "task_variant": null | "neurips" |
                          "12in1", "num_answers": int | null, "num_gqa_answers": int | null}

``python -m vilbert_jax.convert`` writes it; training and evaluation read it as an
initialisation checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from typing import Any, Optional

import flax
import orbax.checkpoint as ocp

from vilbert_jax.config import ViLBERTConfig
from vilbert_jax.model.vilbert import ViLBERTForPretraining
from vilbert_jax.model.vl_tasks import ViLBERTForVLTasks


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """Which model class a params tree belongs to."""

  config: ViLBERTConfig
  task_variant: Optional[str] = None  # None: pretraining model; else "neurips" / "12in1".
  num_answers: Optional[int] = None  # VQA answers of a task model.
  num_gqa_answers: Optional[int] = None  # GQA answers of a 12-in-1 task model.

  def build(self) -> ViLBERTForPretraining | ViLBERTForVLTasks:
    if self.task_variant is None:
      return ViLBERTForPretraining(self.config)
    extra = {"num_gqa_answers": self.num_gqa_answers} if self.num_gqa_answers else {}
    return ViLBERTForVLTasks(self.config, self.task_variant, num_answers=self.num_answers,
                             **extra)

  @classmethod
  def of(cls, model: ViLBERTForPretraining | ViLBERTForVLTasks) -> "ModelSpec":
    if isinstance(model, ViLBERTForPretraining):
      return cls(model.cfg)
    gqa = model.num_gqa_answers if model.head_variant == "12in1" else None
    return cls(model.cfg, model.head_variant, model.num_answers, gqa)


def save_params(directory: str | os.PathLike, params: Any, spec: ModelSpec) -> pathlib.Path:
  """Writes ``params`` (unboxed) and ``spec`` to ``directory`` (must not exist yet)."""
  directory = pathlib.Path(directory).absolute()
  if directory.exists() and any(directory.iterdir()):
    raise FileExistsError(f"{directory} exists and is not empty; choose a new directory")
  directory.mkdir(parents=True, exist_ok=True)
  params = flax.core.meta.unbox(flax.core.unfreeze(params))
  with ocp.StandardCheckpointer() as ckpt:
    ckpt.save(directory / "params", params)
  meta = dataclasses.asdict(spec)
  meta["config"] = dataclasses.asdict(spec.config)
  (directory / "model.json").write_text(json.dumps(meta, indent=2))
  return directory


def load_spec(directory: str | os.PathLike) -> ModelSpec:
  path = pathlib.Path(directory) / "model.json"
  if not path.exists():
    raise FileNotFoundError(f"{path} not found: {directory} is not a vilbert_jax params "
                            "directory (write one with python -m vilbert_jax.convert)")
  meta = json.loads(path.read_text())
  meta["config"] = ViLBERTConfig(**meta["config"])
  return ModelSpec(**meta)


def load_params(directory: str | os.PathLike) -> tuple[Any, ModelSpec]:
  """Reads what ``save_params`` wrote: ``(params as numpy arrays, spec)``."""
  directory = pathlib.Path(directory).absolute()
  spec = load_spec(directory)
  with ocp.StandardCheckpointer() as ckpt:
    params = ckpt.restore(directory / "params")
  return params, spec
