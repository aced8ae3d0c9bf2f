"""Original (PyTorch) ViLBERT checkpoints <-> Flax params.

Covers the pretraining model (``BertForMultiModalPreTraining``) and the downstream-task model
(``VILBertForVLTasks``) with either the NeurIPS 2019 heads (weight-normed VQA MLP) or the
12-in-1 heads. Every key is consumed and every shape checked against the Flax model; the two
``biOutput.q_dense`` layers per co-attention layer that the forward pass never uses are
dropped and reported.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping, Optional

import flax
import jax
import jax.numpy as jnp
import numpy as np

from vilbert_jax.config import ViLBERTConfig
from vilbert_jax.convert.mapping import (TASK_EMBEDDINGS_KEY, Rule, unused_coattention_keys,
                                         vilbert_rules)
from vilbert_jax.model.vilbert import ViLBERTForPretraining
from vilbert_jax.model.vl_tasks import ViLBERTForVLTasks

log = logging.getLogger(__name__)

TIED_DECODER_KEY = "cls.predictions.decoder.weight"
WORD_EMBEDDINGS_KEY = "bert.embeddings.word_embeddings.weight"
_MAX_LISTED = 12  # Keys listed in an error message before "... and N more".

Params = dict[str, Any]


def _listing(keys: list[str]) -> str:
  shown = ", ".join(keys[:_MAX_LISTED])
  more = len(keys) - _MAX_LISTED
  return shown + (f", ... and {more} more" if more > 0 else "")


def detect_task_variant(keys: Mapping[str, Any] | Params) -> Optional[str]:
  """``None`` for a pretraining checkpoint, else "neurips" or "12in1".

  Works on an original state dict (by key) and on a Flax params tree (by its heads).
  """
  if "vqa_head" in keys:  # Flax params.
    return "neurips" if "direction" in keys["vqa_head"]["hidden"] else "12in1"
  if "vil_prediction.main.0.weight_v" in keys:
    return "neurips"
  if "vil_prediction.logit_fc.0.weight" in keys:
    return "12in1"
  return None


def config_for_checkpoint(has_task_tokens: bool, cfg: ViLBERTConfig) -> ViLBERTConfig:
  """``cfg`` with ``task_specific_tokens`` on when the checkpoint has the 12-in-1 task-token
  table (the released JSON configs leave the flag to the command line)."""
  if has_task_tokens and not cfg.task_specific_tokens:
    log.info("the checkpoint has %s: task_specific_tokens turned on", TASK_EMBEDDINGS_KEY)
    return cfg.replace(task_specific_tokens=True)
  return cfg


def model_for_state_dict(state_dict: Mapping[str, np.ndarray],
                         cfg: ViLBERTConfig) -> ViLBERTForPretraining | ViLBERTForVLTasks:
  """The Flax model whose params a checkpoint holds (head sizes read from the tensors; task
  tokens on when the checkpoint has their table)."""
  if cfg.single_stream:
    raise ValueError("the original-checkpoint converter reads two-stream ViLBERT checkpoints; "
                     "cfg.single_stream is set")
  cfg = config_for_checkpoint(TASK_EMBEDDINGS_KEY in state_dict, cfg)
  variant = detect_task_variant(state_dict)
  if variant is None:
    return ViLBERTForPretraining(cfg)
  if variant == "neurips":
    return ViLBERTForVLTasks(cfg, "neurips",
                             num_answers=state_dict["vil_prediction.main.3.weight_v"].shape[0])
  return ViLBERTForVLTasks(
      cfg, "12in1", num_answers=state_dict["vil_prediction.logit_fc.3.weight"].shape[0],
      num_gqa_answers=state_dict["vil_prediction_gqa.logit_fc.3.weight"].shape[0])


def param_shapes(model: Any) -> dict[tuple[str, ...], jax.ShapeDtypeStruct]:
  """Flat ``{path: ShapeDtypeStruct}`` of a model's params, without allocating them."""
  cfg = model.cfg
  ids = jnp.zeros((2, 2), jnp.int32)
  feat = jnp.zeros((2, 2, cfg.v_feature_size), jnp.float32)
  loc = jnp.zeros((2, 2, 5), jnp.float32)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), ids, None, None, feat, loc))
  return flax.traverse_util.flatten_dict(flax.core.meta.unbox(variables["params"]))


def _check_keys(state: Mapping[str, np.ndarray], rules: list[Rule], cfg: ViLBERTConfig) -> None:
  wanted = {r.key for r in rules}
  known = wanted | set(unused_coattention_keys(cfg)) | {TIED_DECODER_KEY}
  missing = sorted(wanted - set(state))
  unexpected = sorted(set(state) - known)
  if missing or unexpected:
    parts = []
    if missing:
      parts.append(f"missing keys: {_listing(missing)}")
    if unexpected:
      parts.append(f"unexpected keys: {_listing(unexpected)}")
    raise ValueError("checkpoint does not match the ViLBERT config "
                     f"({cfg.num_hidden_layers} text / {cfg.v_num_hidden_layers} visual / "
                     f"{cfg.num_coattention_layers} co-attention layers): " + "; ".join(parts))
  if TIED_DECODER_KEY in state and not np.array_equal(state[TIED_DECODER_KEY],
                                                      state[WORD_EMBEDDINGS_KEY]):
    raise ValueError(f"{TIED_DECODER_KEY} differs from {WORD_EMBEDDINGS_KEY}; ViLBERT ties "
                     "them, so this checkpoint cannot be represented")


def original_to_flax(state_dict: Mapping[str, np.ndarray], cfg: ViLBERTConfig) -> Params:
  """Original state dict ``{key: array}`` -> Flax params of the matching model.

  A pretraining checkpoint gives ``ViLBERTForPretraining`` params, a downstream-task one
  ``ViLBERTForVLTasks`` params (of ``model_for_state_dict``, whose config they fit). Raises
  ValueError naming every missing, unexpected or wrongly shaped key. Parameters are cast to
  ``cfg.param_dtype``.
  """
  state = dict(state_dict)
  model = model_for_state_dict(state, cfg)
  cfg = model.cfg
  rules = vilbert_rules(cfg, detect_task_variant(state))
  _check_keys(state, rules, cfg)
  expected = param_shapes(model)
  assert set(expected) == {r.flax_path for r in rules}, "internal: rules do not cover the model"
  dropped = [k for k in unused_coattention_keys(cfg) if k in state]
  if dropped:
    count = sum(int(np.prod(state[k].shape)) for k in dropped)
    log.warning("dropped %d unused tensors (biOutput.q_dense*, %s parameters) that the "
                "original forward pass never reads", len(dropped), f"{count:,}")
  flat, mismatched = {}, []
  for rule in rules:
    value = np.asarray(state[rule.key])
    value = value.T if rule.transpose else value
    if value.shape != expected[rule.flax_path].shape:
      mismatched.append(f"{rule.key} {tuple(state[rule.key].shape)} (model expects "
                        f"{tuple(expected[rule.flax_path].shape)}"
                        f"{', transposed' if rule.transpose else ''})")
      continue
    flat[rule.flax_path] = value.astype(cfg.parameter_dtype)
  if mismatched:
    raise ValueError("shape mismatch between checkpoint and config: " + _listing(mismatched))
  return flax.traverse_util.unflatten_dict(flat)


def unused_tensors(state_dict: Mapping[str, np.ndarray], cfg: ViLBERTConfig) -> dict:
  """The dropped ``q_dense`` tensors, to hand back to ``flax_to_original`` for an exact export."""
  return {k: state_dict[k] for k in unused_coattention_keys(cfg) if k in state_dict}


def _zeros_for_unused(cfg: ViLBERTConfig) -> dict[str, np.ndarray]:
  """Zero placeholders for the unused q_dense layers (Linear(d_b -> d_v), Linear(d_b -> d_t))."""
  widths = {1: cfg.v_hidden_size, 2: cfg.hidden_size}
  out = {}
  for key in unused_coattention_keys(cfg):
    n = int(key.split("q_dense")[1][0])
    shape = (widths[n], cfg.bi_hidden_size) if key.endswith("weight") else (widths[n],)
    out[key] = np.zeros(shape, np.float32)
  return out


def flax_to_original(params: Params, cfg: ViLBERTConfig,
                     unused: Optional[Mapping[str, np.ndarray]] = None) -> dict[str, np.ndarray]:
  """Flax params -> original state dict, loadable by the original code.

  ``unused``: the ``q_dense`` tensors returned by ``unused_tensors`` (then the export equals the
  original checkpoint exactly); without it they are written as zeros, which the original
  forward pass never reads.
  """
  params = flax.core.meta.unbox(flax.core.unfreeze(params))
  flat = flax.traverse_util.flatten_dict(params)
  cfg = config_for_checkpoint(any("task_embeddings" in path for path in flat), cfg)
  rules = vilbert_rules(cfg, detect_task_variant(params))
  missing = sorted("/".join(r.flax_path) for r in rules if r.flax_path not in flat)
  if missing:
    raise ValueError(f"params lack: {_listing(missing)}")
  out = {}
  for rule in rules:
    value = np.asarray(flat[rule.flax_path])
    out[rule.key] = value.T if rule.transpose else value
  out[TIED_DECODER_KEY] = out[WORD_EMBEDDINGS_KEY]
  out.update(_zeros_for_unused(cfg) if unused is None else unused)
  return out
