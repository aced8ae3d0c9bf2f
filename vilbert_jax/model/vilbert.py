"""The ViLBERT backbone and the pretraining model (two streams or the single-stream baseline)."""

from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from vilbert_jax.config import ViLBERTConfig
from vilbert_jax.model.embeddings import (ImageEmbeddings, TextEmbeddings,
                                          text_attention_mask)
from vilbert_jax.model.encoder import INTERMEDIATES, TwoStreamEncoder
from vilbert_jax.model.heads import (AlignmentHead, MaskedLMHead, Pooler, logits_where,
                                     region_head)
from vilbert_jax.model.inputs import default_image_mask, default_text_inputs
from vilbert_jax.model.outputs import BackboneOutput, PretrainingOutput
from vilbert_jax.model.single_stream import SingleStreamModel


class ViLBERTModel(nn.Module):
  """Embeddings, the two-stream encoder and the ReLU poolers."""

  cfg: ViLBERTConfig  # Model configuration (two-stream).

  def setup(self):
    cfg = self.cfg
    self.text_embeddings = TextEmbeddings(cfg)
    self.image_embeddings = ImageEmbeddings(cfg, cfg.v_hidden_size, "visual_embed",
                                            cfg.hidden_dropout_prob)
    self.encoder = TwoStreamEncoder(cfg)
    self.text_pooler = Pooler(cfg, cfg.bi_hidden_size, "text_embed")
    self.image_pooler = Pooler(cfg, cfg.bi_hidden_size, "visual_embed")

  def text_prefix(self, input_ids: jax.Array, token_type_ids: Optional[jax.Array] = None,
                  attention_mask: Optional[jax.Array] = None, *,
                  task_ids: Optional[jax.Array] = None,
                  deterministic: bool = True) -> jax.Array:
    """Text embeddings + the text layers before the first co-attention: ``[B, T, d_t]``
    (``[B, T+1, d_t]`` with task tokens; ``task_ids [B]``).

    Independent of the image; pass it back as ``text_hidden`` to skip recomputing it.
    """
    token_type_ids, attention_mask = default_text_inputs(input_ids, token_type_ids,
                                                         attention_mask)
    text = self.text_embeddings(input_ids, token_type_ids, deterministic, task_ids)
    self.sow(INTERMEDIATES, "embedded_text", text)
    return self.encoder.text_prefix(text, text_attention_mask(self.cfg, attention_mask),
                                    deterministic)

  def __call__(self, input_ids: jax.Array, token_type_ids: Optional[jax.Array] = None,
               attention_mask: Optional[jax.Array] = None, image_feat: jax.Array = None,
               image_loc: jax.Array = None, image_mask: Optional[jax.Array] = None, *,
               task_ids: Optional[jax.Array] = None, deterministic: bool = True,
               text_hidden: Optional[jax.Array] = None) -> BackboneOutput:
    """input_ids/token_type_ids/attention_mask ``[B, T]``; image_feat ``[B, R, D]``;
    image_loc ``[B, R, 5]``; image_mask ``[B, R]``. Masks are 1 for real tokens.
    ``task_ids [B]``: the original's task ids (models with ``task_specific_tokens`` only;
    their text outputs then have T+1 positions, the task token at 1).
    ``text_hidden``: the result of ``text_prefix`` for these tokens, if already computed."""
    token_type_ids, attention_mask = default_text_inputs(input_ids, token_type_ids,
                                                         attention_mask)
    image_mask = default_image_mask(image_feat, image_mask)
    if text_hidden is None:
      text_hidden = self.text_prefix(input_ids, token_type_ids, attention_mask,
                                     task_ids=task_ids, deterministic=deterministic)
    image = self.image_embeddings(image_feat, image_loc, deterministic)
    self.sow(INTERMEDIATES, "embedded_image", image)
    text, image = self.encoder(text_hidden, text_attention_mask(self.cfg, attention_mask),
                               image, image_mask, deterministic, text_prefix_done=True)
    text_pooled, image_pooled = self.text_pooler(text), self.image_pooler(image)
    return BackboneOutput(text, image, text_pooled, image_pooled, text_pooled * image_pooled)


def backbone(cfg: ViLBERTConfig) -> nn.Module:
  """The backbone the config asks for: ViLBERT, or the single-stream baseline."""
  if cfg.single_stream:
    return SingleStreamModel(cfg)
  return ViLBERTModel(cfg)


class ViLBERTForPretraining(nn.Module):
  """Backbone + masked-word, masked-region and alignment heads.

  ``apply(variables, input_ids, token_type_ids, attention_mask, image_feat, image_loc,
  image_mask, deterministic=True) -> PretrainingOutput``; pass ``rngs={"dropout": key}`` with
  ``deterministic=False``. Collect block outputs with ``mutable=["intermediates"]`` and
  attention probabilities with ``mutable=["attention_maps"]``.

  In training pass the labels too (``masked_lm_labels=``, ``image_label=``, as for
  ``losses.pretraining_losses``): the masked-word and region logits are then computed only
  where a loss reads them (``heads.logits_where``) and are 0 elsewhere; the losses, their
  gradients and the masked-word accuracy are unchanged, the step is ~15% faster.
  """

  cfg: ViLBERTConfig  # Model configuration.

  def setup(self):
    cfg = self.cfg
    if cfg.task_specific_tokens:
      raise ValueError("the pretraining model has no task tokens (12-in-1 pretrains without "
                       "them; task_specific_tokens is for ViLBERTForVLTasks)")
    self.backbone = backbone(cfg)
    self.masked_lm_head = MaskedLMHead(cfg)
    self.region_head = region_head(cfg)
    self.alignment_head = AlignmentHead(cfg)

  def __call__(self, input_ids: jax.Array, token_type_ids: Optional[jax.Array] = None,
               attention_mask: Optional[jax.Array] = None, image_feat: jax.Array = None,
               image_loc: jax.Array = None, image_mask: Optional[jax.Array] = None, *,
               deterministic: bool = True,
               text_hidden: Optional[jax.Array] = None,
               masked_lm_labels: Optional[jax.Array] = None,
               image_label: Optional[jax.Array] = None) -> PretrainingOutput:
    """``text_hidden``: a precomputed ``ViLBERTModel.text_prefix`` (two-stream only).
    ``masked_lm_labels`` ``[B, T]`` (-1 = none): masked-word logits only where labelled;
    ``image_label`` ``[B, R-1]`` (1 = masked, no IMG slot): region logits only there."""
    extra = {} if text_hidden is None else {"text_hidden": text_hidden}
    out = self.backbone(input_ids, token_type_ids, attention_mask, image_feat, image_loc,
                        image_mask, deterministic=deterministic, **extra)
    word_embeddings = self.backbone.text_embeddings.word_embeddings.embedding
    if masked_lm_labels is None:
      mlm_logits = self.masked_lm_head(out.text_sequence, word_embeddings)
    else:
      mlm_logits = logits_where(lambda mdl, x, emb: mdl.masked_lm_head(x, emb), self,
                                out.text_sequence, masked_lm_labels >= 0, word_embeddings)
    if image_label is None:
      region_logits = self.region_head(out.image_sequence)
    else:
      masked = jnp.pad(image_label == 1, ((0, 0), (1, 0)))  # the IMG slot has no label
      region_logits = logits_where(lambda mdl, x: mdl.region_head(x), self,
                                   out.image_sequence, masked)
    return PretrainingOutput(
        **vars(out), mlm_logits=mlm_logits, region_logits=region_logits,
        alignment_logits=self.alignment_head(out.pooled, deterministic))
