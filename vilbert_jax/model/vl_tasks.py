"""The downstream-task model of the original releases: backbone, pretraining heads, task heads.

By default all heads run on every call, as in the original ``VILBertForVLTasks``; a task
model built with ``outputs=("vqa_logits",)`` (say) runs only the heads it reads, with the same
parameters (``init`` still creates every head, so released checkpoints load either way).
"""

from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax

from vilbert_jax.config import ViLBERTConfig
from vilbert_jax.model.attention import additive_key_mask
from vilbert_jax.model.heads import AlignmentHead, MaskedLMHead, region_head
from vilbert_jax.model.outputs import TaskOutput
from vilbert_jax.model.task_heads import GeluClassifier, answer_classifier, score_head
from vilbert_jax.model.inputs import default_image_mask
from vilbert_jax.model.layers import Dropout
from vilbert_jax.model.vilbert import backbone


class ViLBERTForVLTasks(nn.Module):
  """``apply(variables, input_ids, token_type_ids, attention_mask, image_feat, image_loc,
  image_mask, deterministic=True) -> TaskOutput``.

  ``head_variant`` "neurips" has the weight-normed VQA head; "12in1" has the GeLU/LayerNorm
  heads plus the GQA, NLVR2-pair and entailment heads. With ``cfg.task_specific_tokens`` pass
  ``task_ids=[B]`` too; ``mlm_logits`` and ``text_token_logits`` then have T+1 rows (row 1 is
  the task token), as in the original.
  """

  cfg: ViLBERTConfig  # Model configuration.
  head_variant: str = "neurips"  # "neurips" or "12in1".
  num_answers: int = 3129  # VQA answer vocabulary.
  num_gqa_answers: int = 1533  # GQA answer vocabulary (12-in-1 only).
  outputs: tuple[str, ...] = ()  # TaskOutput fields to compute; () = all of them.

  def setup(self):
    cfg = self.cfg
    stream = "text_embed" if cfg.single_stream else "visual_embed"
    self.backbone = backbone(cfg)
    self.masked_lm_head = MaskedLMHead(cfg)
    self.region_head = region_head(cfg)
    self.alignment_head = AlignmentHead(cfg)
    self.dropout = Dropout(cfg.hidden_dropout_prob)
    self.vqa_head = answer_classifier(cfg, self.head_variant, self.num_answers, "vqa_head")
    self.retrieval_head = score_head(cfg, "pooled", "retrieval_head")
    self.grounding_head = score_head(cfg, stream, "grounding_head")
    self.text_token_head = score_head(cfg, "text_embed", "text_token_head")
    if self.head_variant == "12in1":
      self.gqa_head = answer_classifier(cfg, "12in1", self.num_gqa_answers, "gqa_head")
      self.pair_head = GeluClassifier(cfg, 2, 2 * cfg.pooled_size)
      self.entailment_head = score_head(cfg, "pooled", "entailment_head", features=3)

  def __call__(self, input_ids: jax.Array, token_type_ids: Optional[jax.Array] = None,
               attention_mask: Optional[jax.Array] = None, image_feat: jax.Array = None,
               image_loc: jax.Array = None, image_mask: Optional[jax.Array] = None, *,
               task_ids: Optional[jax.Array] = None, deterministic: bool = True,
               text_hidden: Optional[jax.Array] = None) -> TaskOutput:
    """``task_ids [B]``: the original's task ids (``cfg.task_specific_tokens`` only).
    ``text_hidden``: a precomputed ``ViLBERTModel.text_prefix`` (two-stream only)."""
    image_mask = default_image_mask(image_feat, image_mask)
    extra = {} if text_hidden is None else {"text_hidden": text_hidden}
    if task_ids is not None:
      extra["task_ids"] = task_ids
    out = self.backbone(input_ids, token_type_ids, attention_mask, image_feat, image_loc,
                        image_mask, deterministic=deterministic, **extra)

    def wanted(name: str) -> bool:
      return not self.outputs or name in self.outputs or self.is_initializing()

    pooled = self.dropout(out.pooled, deterministic=deterministic)
    heads = {}
    if wanted("vqa_logits"):
      heads["vqa_logits"] = self.vqa_head(pooled, deterministic)
    if wanted("retrieval_score"):
      heads["retrieval_score"] = self.retrieval_head(pooled)[..., 0]
    if wanted("alignment_logits"):
      heads["alignment_logits"] = self.alignment_head(out.pooled, deterministic)
    if wanted("region_logits"):
      heads["region_logits"] = self.region_head(out.image_sequence)
    if wanted("grounding_logits"):
      image_seq = self.dropout(out.image_sequence, deterministic=deterministic)
      heads["grounding_logits"] = (self.grounding_head(image_seq)[..., 0]
                                   + additive_key_mask(image_mask)[:, 0, 0])
    if wanted("mlm_logits"):
      word_embeddings = self.backbone.text_embeddings.word_embeddings.embedding
      heads["mlm_logits"] = self.masked_lm_head(out.text_sequence, word_embeddings)
    if wanted("text_token_logits"):
      text_seq = self.dropout(out.text_sequence, deterministic=deterministic)
      heads["text_token_logits"] = self.text_token_head(text_seq)[..., 0]
    if self.head_variant == "12in1":
      if wanted("gqa_logits"):
        heads["gqa_logits"] = self.gqa_head(pooled, deterministic)
      if wanted("entailment_logits"):
        heads["entailment_logits"] = self.entailment_head(pooled)
      if wanted("pair_logits") and pooled.shape[0] % 2 == 0:
        # NLVR2: consecutive examples form one pair.
        heads["pair_logits"] = self.pair_head(pooled.reshape(pooled.shape[0] // 2, -1),
                                              deterministic)
    return TaskOutput(pooled=out.pooled, **heads)
