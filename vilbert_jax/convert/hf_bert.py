"""HF BERT checkpoints -> the text stream of a ViLBERT (or single-stream) params tree.

This is how pretraining starts from BERT: the embeddings, the ``num_hidden_layers`` text
layers and, when the checkpoint has one, the masked-word head map 1:1; everything else keeps
the freshly initialised values it is given. BERT's pooler and next-sentence head are dropped
for ViLBERT (the single-stream baseline keeps BERT's pooler).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Mapping

import flax
import numpy as np

from vilbert_jax.config import ViLBERTConfig
from vilbert_jax.convert.mapping import (Rule, bert_layer_rules, linear, masked_lm_head_rules,
                                         text_embedding_rules)

# Keys a BERT checkpoint may carry that have no place in ViLBERT.
# (The MLM head and the pooler are used when the target model has a place for them.)
_IGNORED = re.compile(
    r"^(bert\.embeddings\.position_ids|bert\.pooler\..*|cls\.seq_relationship\..*"
    r"|cls\.predictions\..*)$")


@dataclasses.dataclass(frozen=True)
class LoadReport:
  """What a partial load did, by Flax path (``a/b/c``) and by checkpoint key."""

  loaded: tuple[str, ...]  # Flax paths taken from the checkpoint.
  fresh: tuple[str, ...]  # Flax paths left at their initial values.
  ignored: tuple[str, ...]  # Checkpoint keys with no ViLBERT counterpart.

  def summary(self) -> str:
    return (f"loaded {len(self.loaded)} tensors from the checkpoint, kept {len(self.fresh)} "
            f"freshly initialised, ignored {len(self.ignored)} checkpoint keys")


def normalize_bert_keys(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """``bert.``-less keys (HF ``BertModel``) get the prefix; TF-era ``gamma``/``beta`` renamed."""
  out = {}
  for key, value in state_dict.items():
    key = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", key)
    key = re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", key)
    if not key.startswith(("bert.", "cls.")):
      key = "bert." + key
    out[key] = value
  return out


def bert_rules(cfg: ViLBERTConfig, with_mlm_head: bool) -> list[Rule]:
  """Rules for BERT keys (with ``bert.`` prefix) -> ViLBERT text-stream paths."""
  rules = [*text_embedding_rules(("backbone", "text_embeddings"), "bert.embeddings")]
  layers = ("backbone", "layers_{}") if cfg.single_stream else (
      "backbone", "encoder", "text_layers_{}")
  for i in range(cfg.num_hidden_layers):
    rules += bert_layer_rules(layers[:-1] + (layers[-1].format(i),), f"bert.encoder.layer.{i}")
  if cfg.single_stream:
    rules += linear(("backbone", "pooler", "dense"), "bert.pooler.dense")
  if with_mlm_head:
    rules += masked_lm_head_rules()
  return rules


def hf_bert_to_flax(state_dict: Mapping[str, np.ndarray], cfg: ViLBERTConfig,
                    init_params: Any) -> tuple[dict, LoadReport]:
  """Overlays a BERT checkpoint on ``init_params`` (the model's freshly initialised params).

  Args:
    state_dict: HF BERT keys, with or without the ``bert.`` prefix, with or without the MLM
      head (``cls.predictions.*``).
    cfg: the ViLBERT config; its text stream must have BERT's sizes.
    init_params: params of ``ViLBERTForPretraining(cfg)`` (or of a task model) to fill.

  Returns:
    ``(params, report)``. Raises ValueError naming any BERT layer the config lacks, a missing
    key, or a shape that does not match.
  """
  state = normalize_bert_keys(state_dict)
  with_head = ("cls.predictions.transform.dense.weight" in state
               and "masked_lm_head" in init_params)
  rules = bert_rules(cfg, with_mlm_head=with_head)
  wanted = {r.key for r in rules}
  ignored = sorted(k for k in state if k not in wanted and _IGNORED.match(k))
  unexpected = sorted(set(state) - wanted - set(ignored))
  missing = sorted(wanted - set(state))
  if unexpected or missing:
    raise ValueError(
        f"BERT checkpoint does not fit the text stream ({cfg.num_hidden_layers} layers, "
        f"width {cfg.hidden_size}): missing {missing[:8]}, unexpected {unexpected[:8]}")
  flat = flax.traverse_util.flatten_dict(flax.core.meta.unbox(flax.core.unfreeze(init_params)))
  mismatched = []
  for rule in rules:
    value = np.asarray(state[rule.key])
    value = value.T if rule.transpose else value
    target = flat.get(rule.flax_path)
    if target is None:
      raise ValueError(f"init_params has no {'/'.join(rule.flax_path)} for {rule.key}")
    if value.shape != target.shape:
      mismatched.append(f"{rule.key}: {value.shape} vs model {target.shape}")
      continue
    flat[rule.flax_path] = value.astype(target.dtype)
  if mismatched:
    raise ValueError("BERT checkpoint shapes do not match the config: " + "; ".join(mismatched))
  loaded = {r.flax_path for r in rules}
  report = LoadReport(
      loaded=tuple(sorted("/".join(p) for p in loaded)),
      fresh=tuple(sorted("/".join(p) for p in flat if p not in loaded)),
      ignored=tuple(ignored))
  return flax.traverse_util.unflatten_dict(flat), report
