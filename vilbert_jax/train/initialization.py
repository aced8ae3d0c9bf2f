"""Starting params from a checkpoint: BERT (pretraining) or a ViLBERT params directory."""

from __future__ import annotations

import json
import logging
import os
import pathlib
from typing import Any

import flax
import jax
import numpy as np

from vilbert_jax.config import ViLBERTConfig
from vilbert_jax.convert.hf_bert import LoadReport, hf_bert_to_flax
from vilbert_jax.convert.io import load_state_dict
from vilbert_jax.params_io import load_params
from vilbert_jax.train.checkpoints import restore_on_host

log = logging.getLogger(__name__)

# In a run's workdir: what the start-up load took from which checkpoint (``save_report``).
REPORT_FILE = "initialization.json"


def overlay_params(fresh: Any, loaded: Any, source: str) -> tuple[Any, LoadReport]:
  """Takes every parameter of ``loaded`` that ``fresh`` also has (same shape), keeps the rest.

  A shared path with a different shape is an error; paths only in ``loaded`` are reported
  as ignored (e.g. pretraining heads when fine-tuning), except a task-token table, which a
  model without task tokens cannot silently drop (its outputs would change).
  """
  fresh_flat = flax.traverse_util.flatten_dict(fresh, sep="/")
  loaded_flat = flax.traverse_util.flatten_dict(loaded, sep="/")
  mismatched = [f"{k}: checkpoint {np.shape(v)} vs model {np.shape(fresh_flat[k])}"
                for k, v in loaded_flat.items()
                if k in fresh_flat and np.shape(v) != np.shape(fresh_flat[k])]
  if mismatched:
    raise ValueError(f"{source} does not fit the model: " + "; ".join(mismatched[:8]))
  tokens = [k for k in loaded_flat if k.endswith("/task_embeddings/embedding")]
  if tokens and tokens[0] not in fresh_flat:
    raise ValueError(f"{source} has 12-in-1 task tokens ({tokens[0]}) but the model has none: "
                     "set --config.model.task_specific_tokens=True (each task then reads its "
                     "own row, config.task.task_id)")
  out = {k: np.asarray(loaded_flat[k], dtype=np.asarray(v).dtype) if k in loaded_flat else v
         for k, v in fresh_flat.items()}
  report = LoadReport(loaded=tuple(sorted(k for k in fresh_flat if k in loaded_flat)),
                      fresh=tuple(sorted(k for k in fresh_flat if k not in loaded_flat)),
                      ignored=tuple(sorted(k for k in loaded_flat if k not in fresh_flat)))
  return flax.traverse_util.unflatten_dict(out, sep="/"), report


def load_checkpoint_params(path: str) -> Any:
  """Params (host arrays) from ``path``: a params directory (``model.json`` + ``params/``, as
  written by ``python -m vilbert_jax.convert`` or a run's ``export/``), or a vilbert_jax
  run's workdir (its ``export/``, else its latest checkpoint)."""
  directory = pathlib.Path(path).expanduser().absolute()
  for candidate in (directory, directory / "export"):
    if (candidate / "model.json").exists():
      return load_params(candidate)[0]
  steps = sorted(int(p.name) for p in (directory / "checkpoints").glob("*") if p.name.isdigit())
  if not steps:
    raise FileNotFoundError(
        f"{path} is neither a params directory (model.json + params/, from python -m "
        "vilbert_jax.convert) nor a vilbert_jax run's workdir (export/ or checkpoints/)")
  return restore_on_host(directory / "checkpoints" / str(steps[-1]) / "state")["params"]


def initial_params(init: Any, cfg: ViLBERTConfig, bert_checkpoint: str = "",
                   vilbert_checkpoint: str = "") -> tuple[Any, LoadReport | None]:
  """``init`` (host params of the fresh model) with a checkpoint laid over it, if any.

  ``vilbert_checkpoint``: see ``load_checkpoint_params``; every parameter it shares with the
  model must have the same shape.
  """
  if bert_checkpoint and vilbert_checkpoint:
    raise ValueError("set only one of init.bert_checkpoint and init_checkpoint")
  if bert_checkpoint:
    params, report = hf_bert_to_flax(load_state_dict(os.path.expanduser(bert_checkpoint)), cfg,
                                     init)
  elif vilbert_checkpoint:
    loaded = load_checkpoint_params(vilbert_checkpoint)
    params, report = overlay_params(init, loaded, vilbert_checkpoint)
  else:
    return init, None
  log.info("initialised from %s: %s", bert_checkpoint or vilbert_checkpoint, report.summary())
  return params, report


def save_report(workdir: pathlib.Path, source: str, kind: str, report: LoadReport) -> None:
  """Writes ``workdir/initialization.json``: ``{"source", "kind" ("bert" | "vilbert"),
  "loaded", "fresh", "ignored"}`` (process 0 only). A resumed run reads ``loaded`` back to
  give ``init.bert_lr_multiplier`` to the very same parameters."""
  if jax.process_index() != 0:
    return
  workdir.mkdir(parents=True, exist_ok=True)
  record = {"source": source, "kind": kind, "loaded": list(report.loaded),
            "fresh": list(report.fresh), "ignored": list(report.ignored)}
  (workdir / REPORT_FILE).write_text(json.dumps(record, indent=1))


def bert_loaded_paths(workdir: pathlib.Path) -> tuple[str, ...]:
  """The parameter paths a run's start took from BERT (``save_report``), for resuming it."""
  path = workdir / REPORT_FILE
  if not path.exists():
    raise FileNotFoundError(
        f"{path} is missing: it records which parameters were loaded from "
        "init.bert_checkpoint (they get init.bert_lr_multiplier); resume with the workdir the "
        "run started in")
  record = json.loads(path.read_text())
  return tuple(record["loaded"]) if record["kind"] == "bert" else ()
