"""Starting params from a checkpoint: BERT (pretraining) or a ViLBERT params directory."""

from __future__ import annotations

import logging
import os
from typing import Any

import flax
import numpy as np

from vilbert_jax.config import ViLBERTConfig
from vilbert_jax.convert.hf_bert import LoadReport, hf_bert_to_flax
from vilbert_jax.convert.io import load_state_dict
from vilbert_jax.params_io import load_params

log = logging.getLogger(__name__)


def overlay_params(fresh: Any, loaded: Any, source: str) -> tuple[Any, LoadReport]:
  """Takes every parameter of ``loaded`` that ``fresh`` also has (same shape), keeps the rest.

  A shared path with a different shape is an error; paths only in ``loaded`` are reported
  as ignored (e.g. pretraining heads when fine-tuning).
  """
  fresh_flat = flax.traverse_util.flatten_dict(fresh, sep="/")
  loaded_flat = flax.traverse_util.flatten_dict(loaded, sep="/")
  mismatched = [f"{k}: checkpoint {np.shape(v)} vs model {np.shape(fresh_flat[k])}"
                for k, v in loaded_flat.items()
                if k in fresh_flat and np.shape(v) != np.shape(fresh_flat[k])]
  if mismatched:
    raise ValueError(f"{source} does not fit the model: " + "; ".join(mismatched[:8]))
  out = {k: np.asarray(loaded_flat[k], dtype=np.asarray(v).dtype) if k in loaded_flat else v
         for k, v in fresh_flat.items()}
  report = LoadReport(loaded=tuple(sorted(k for k in fresh_flat if k in loaded_flat)),
                      fresh=tuple(sorted(k for k in fresh_flat if k not in loaded_flat)),
                      ignored=tuple(sorted(k for k in loaded_flat if k not in fresh_flat)))
  return flax.traverse_util.unflatten_dict(out, sep="/"), report


def initial_params(init: Any, cfg: ViLBERTConfig, bert_checkpoint: str = "",
                   vilbert_checkpoint: str = "") -> tuple[Any, LoadReport | None]:
  """``init`` (host params of the fresh model) with a checkpoint laid over it, if any."""
  if bert_checkpoint and vilbert_checkpoint:
    raise ValueError("set only one of init.bert_checkpoint and init.vilbert_checkpoint")
  if bert_checkpoint:
    params, report = hf_bert_to_flax(load_state_dict(os.path.expanduser(bert_checkpoint)), cfg,
                                     init)
  elif vilbert_checkpoint:
    loaded, _ = load_params(os.path.expanduser(vilbert_checkpoint))
    params, report = overlay_params(init, loaded, vilbert_checkpoint)
  else:
    return init, None
  log.info("initialised from %s: %s", bert_checkpoint or vilbert_checkpoint, report.summary())
  return params, report
