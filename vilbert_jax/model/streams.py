"""Sizes and logical axis names of the text and visual streams, read from a config."""

from __future__ import annotations

import dataclasses

from vilbert_jax.config import ViLBERTConfig


@dataclasses.dataclass(frozen=True)
class Stream:
  """What a TRM / Co-TRM block needs to know about one stream."""

  width: int  # Stream width (d_t or d_v).
  num_heads: int  # Self-attention heads.
  mlp: int  # FFN inner width.
  dropout: float  # Hidden dropout rate.
  attention_dropout: float  # Attention-probability dropout rate.
  embed_axis: str  # Logical axis of the stream width.
  heads_axis: str  # Logical axis of the self-attention projection width.
  mlp_axis: str  # Logical axis of the FFN inner width.


def text_stream(cfg: ViLBERTConfig) -> Stream:
  return Stream(cfg.hidden_size, cfg.num_attention_heads, cfg.intermediate_size,
                cfg.hidden_dropout_prob, cfg.attention_probs_dropout_prob,
                "text_embed", "text_heads", "text_mlp")


def visual_stream(cfg: ViLBERTConfig) -> Stream:
  return Stream(cfg.v_hidden_size, cfg.v_num_attention_heads, cfg.v_intermediate_size,
                cfg.v_hidden_dropout_prob, cfg.v_attention_probs_dropout_prob,
                "visual_embed", "visual_heads", "visual_mlp")
