"""The Co-TRM block: co-attention between the text and the visual stream.

There is no self-attention sublayer. Each stream projects to the co-attention width d_b with
its own query/key/value maps; text queries attend to the image and image queries to the text;
each stream then has its own output projection, LayerNorm and FFN.
"""

from __future__ import annotations

import flax.linen as nn
import jax

from vilbert_jax.config import ViLBERTConfig
from vilbert_jax.model.attention import AttentionCore, QKVProjection
from vilbert_jax.model.streams import text_stream, visual_stream
from vilbert_jax.model.sublayers import FeedForward, ResidualOutput

COATTN_AXIS = "coattn_heads"  # Logical axis of the co-attention width d_b.


class CoAttentionLayer(nn.Module):
  """One Co-TRM layer; returns the updated ``(text, image)``."""

  cfg: ViLBERTConfig  # Model configuration.

  @nn.compact
  def __call__(self, text: jax.Array, text_mask: jax.Array, image: jax.Array,
               image_mask: jax.Array, deterministic: bool) -> tuple[jax.Array, jax.Array]:
    """text ``[B, T, d_t]``, image ``[B, R, d_v]``, masks ``[B, T]`` / ``[B, R]``."""
    cfg, t, v = self.cfg, text_stream(self.cfg), visual_stream(self.cfg)
    q_v, k_v, v_v = QKVProjection(cfg, cfg.bi_hidden_size, v.embed_axis, COATTN_AXIS,
                                  name="visual_qkv")(image)
    q_t, k_t, v_t = QKVProjection(cfg, cfg.bi_hidden_size, t.embed_axis, COATTN_AXIS,
                                  name="text_qkv")(text)
    # Text queries read the image (visual attention dropout), image queries the text.
    text_context = AttentionCore(cfg.bi_num_attention_heads, v.attention_dropout,
                                 cfg.attention_impl, name="text_to_image")(
                                     q_t, k_v, v_v, image_mask, deterministic)
    image_context = AttentionCore(cfg.bi_num_attention_heads, t.attention_dropout,
                                  cfg.attention_impl, name="image_to_text")(
                                      q_v, k_t, v_t, text_mask, deterministic)
    image = ResidualOutput(cfg, v.dropout, COATTN_AXIS, v.embed_axis,
                           name="visual_attention_output")(image_context, image, deterministic)
    text = ResidualOutput(cfg, t.dropout, COATTN_AXIS, t.embed_axis,
                          name="text_attention_output")(text_context, text, deterministic)
    image = FeedForward(cfg, v.mlp, v.dropout, v.embed_axis, v.mlp_axis,
                        name="visual_ffn")(image, deterministic)
    text = FeedForward(cfg, t.mlp, t.dropout, t.embed_axis, t.mlp_axis,
                       name="text_ffn")(text, deterministic)
    return text, image
