"""The name map between original (PyTorch) ViLBERT/BERT state-dict keys and our Flax params.

A ``Rule`` pairs one Flax parameter path with one original key and says how the tensor
changes on the way: torch ``Linear`` weights ``[out, in]`` become Flax kernels ``[in, out]``.
The rules are generated from the configuration, so every layer the config implies is listed.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator

from vilbert_jax.config import ViLBERTConfig

Path = tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Rule:
  flax_path: Path  # Path in the Flax params tree.
  key: str  # Original state-dict key.
  transpose: bool = False  # torch Linear weight [out, in] <-> Flax kernel [in, out].


def linear(flax: Path, key: str) -> Iterator[Rule]:
  yield Rule(flax + ("kernel",), f"{key}.weight", transpose=True)
  yield Rule(flax + ("bias",), f"{key}.bias")


def norm(flax: Path, key: str) -> Iterator[Rule]:
  yield Rule(flax + ("scale",), f"{key}.weight")
  yield Rule(flax + ("bias",), f"{key}.bias")


def weight_norm_linear(flax: Path, key: str) -> Iterator[Rule]:
  yield Rule(flax + ("direction",), f"{key}.weight_v", transpose=True)
  yield Rule(flax + ("scale",), f"{key}.weight_g")
  yield Rule(flax + ("bias",), f"{key}.bias")


def text_embedding_rules(flax: Path, key: str) -> Iterator[Rule]:
  """BERT embeddings (``bert.embeddings``)."""
  for name in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
    yield Rule(flax + (name, "embedding"), f"{key}.{name}.weight")
  yield from norm(flax + ("layer_norm",), f"{key}.LayerNorm")


def bert_layer_rules(flax: Path, key: str) -> Iterator[Rule]:
  """One BERT layer (``bert.encoder.layer.i``): our ``TransformerLayer``."""
  for name in ("query", "key", "value"):
    yield from linear(flax + ("attention", "qkv", name), f"{key}.attention.self.{name}")
  yield from linear(flax + ("attention_output", "dense"), f"{key}.attention.output.dense")
  yield from norm(flax + ("attention_output", "layer_norm"), f"{key}.attention.output.LayerNorm")
  yield from linear(flax + ("ffn", "intermediate"), f"{key}.intermediate.dense")
  yield from linear(flax + ("ffn", "output", "dense"), f"{key}.output.dense")
  yield from norm(flax + ("ffn", "output", "layer_norm"), f"{key}.output.LayerNorm")


def feed_forward_rules(flax: Path, key_intermediate: str, key_output: str) -> Iterator[Rule]:
  yield from linear(flax + ("intermediate",), f"{key_intermediate}.dense")
  yield from linear(flax + ("output", "dense"), f"{key_output}.dense")
  yield from norm(flax + ("output", "layer_norm"), f"{key_output}.LayerNorm")


def coattention_layer_rules(flax: Path, key: str) -> Iterator[Rule]:
  """One ``bert.encoder.c_layer.i``: stream 1 of the original is visual, stream 2 text."""
  for stream, n in (("visual", 1), ("text", 2)):
    for name in ("query", "key", "value"):
      yield from linear(flax + (f"{stream}_qkv", name), f"{key}.biattention.{name}{n}")
    yield from linear(flax + (f"{stream}_attention_output", "dense"), f"{key}.biOutput.dense{n}")
    yield from norm(flax + (f"{stream}_attention_output", "layer_norm"),
                    f"{key}.biOutput.LayerNorm{n}")
    s = stream[0]
    yield from feed_forward_rules(flax + (f"{stream}_ffn",), f"{key}.{s}_intermediate",
                                  f"{key}.{s}_output")


def unused_coattention_keys(cfg: ViLBERTConfig) -> list[str]:
  """``biOutput.q_dense{1,2}``: in the released checkpoints, never used by the forward pass."""
  return [f"bert.encoder.c_layer.{i}.biOutput.q_dense{n}.{p}"
          for i in range(cfg.num_coattention_layers) for n in (1, 2) for p in ("weight", "bias")]


TASK_EMBEDDINGS_KEY = "bert.embeddings.task_embeddings.weight"  # 12-in-1 task tokens [20, d_t].


def backbone_rules(cfg: ViLBERTConfig, flax: Path = ("backbone",)) -> Iterator[Rule]:
  """Everything under ``bert.`` of a two-stream checkpoint."""
  yield from text_embedding_rules(flax + ("text_embeddings",), "bert.embeddings")
  if cfg.task_specific_tokens:
    yield Rule(flax + ("text_embeddings", "task_embeddings", "embedding"), TASK_EMBEDDINGS_KEY)
  image = flax + ("image_embeddings",)
  yield from linear(image + ("features",), "bert.v_embeddings.image_embeddings")
  yield from linear(image + ("locations",), "bert.v_embeddings.image_location_embeddings")
  yield from norm(image + ("layer_norm",), "bert.v_embeddings.LayerNorm")
  enc = flax + ("encoder",)
  for i in range(cfg.num_hidden_layers):
    yield from bert_layer_rules(enc + (f"text_layers_{i}",), f"bert.encoder.layer.{i}")
  for i in range(cfg.v_num_hidden_layers):
    yield from bert_layer_rules(enc + (f"visual_layers_{i}",), f"bert.encoder.v_layer.{i}")
  for i in range(cfg.num_coattention_layers):
    yield from coattention_layer_rules(enc + (f"coattention_layers_{i}",),
                                       f"bert.encoder.c_layer.{i}")
  yield from linear(flax + ("text_pooler", "dense"), "bert.t_pooler.dense")
  yield from linear(flax + ("image_pooler", "dense"), "bert.v_pooler.dense")


def masked_lm_head_rules(flax: Path = ("masked_lm_head",)) -> Iterator[Rule]:
  """``cls.predictions`` (the decoder weight is tied to the word embeddings)."""
  yield from linear(flax + ("transform", "dense"), "cls.predictions.transform.dense")
  yield from norm(flax + ("transform", "layer_norm"), "cls.predictions.transform.LayerNorm")
  yield Rule(flax + ("bias",), "cls.predictions.bias")


def pretraining_head_rules() -> Iterator[Rule]:
  """Everything under ``cls.``."""
  yield from masked_lm_head_rules()
  yield from linear(("region_head", "transform", "dense"), "cls.imagePredictions.transform.dense")
  yield from norm(("region_head", "transform", "layer_norm"),
                  "cls.imagePredictions.transform.LayerNorm")
  yield from linear(("region_head", "decoder"), "cls.imagePredictions.decoder")
  yield from linear(("alignment_head", "dense"), "cls.bi_seq_relationship")


def gelu_classifier_rules(flax: Path, key: str) -> Iterator[Rule]:
  """12-in-1 ``SimpleClassifier``: ``logit_fc.{0: Linear, 2: LayerNorm, 3: Linear}``."""
  yield from linear(flax + ("hidden",), f"{key}.logit_fc.0")
  yield from norm(flax + ("layer_norm",), f"{key}.logit_fc.2")
  yield from linear(flax + ("output",), f"{key}.logit_fc.3")


def task_head_rules(variant: str) -> Iterator[Rule]:
  """The downstream heads of ``VILBertForVLTasks`` in the NeurIPS or 12-in-1 release."""
  if variant == "neurips":
    yield from weight_norm_linear(("vqa_head", "hidden"), "vil_prediction.main.0")
    yield from weight_norm_linear(("vqa_head", "output"), "vil_prediction.main.3")
  else:
    yield from gelu_classifier_rules(("vqa_head",), "vil_prediction")
    yield from gelu_classifier_rules(("gqa_head",), "vil_prediction_gqa")
    yield from gelu_classifier_rules(("pair_head",), "vil_binary_prediction")
    yield from linear(("entailment_head",), "vil_tri_prediction")
  yield from linear(("retrieval_head",), "vil_logit")
  yield from linear(("grounding_head",), "vision_logit")
  yield from linear(("text_token_head",), "linguisic_logit")


def vilbert_rules(cfg: ViLBERTConfig, task_variant: str | None) -> list[Rule]:
  """All rules of a pretraining (``task_variant=None``) or downstream-task checkpoint."""
  rules = [*backbone_rules(cfg), *pretraining_head_rules()]
  if task_variant is not None:
    rules += task_head_rules(task_variant)
  return rules
