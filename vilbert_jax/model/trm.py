"""The TRM block: a BERT (post-LayerNorm) transformer layer of one stream."""

from __future__ import annotations

import flax.linen as nn
import jax

from vilbert_jax.config import ViLBERTConfig
from vilbert_jax.model.attention import SelfAttention
from vilbert_jax.model.streams import Stream
from vilbert_jax.model.sublayers import FeedForward, ResidualOutput


class TransformerLayer(nn.Module):
  """``a = LN(x + Drop(Dense(SelfAttn(x))))``, ``y = LN(a + Drop(FFN(a)))``.

  Text layers are 768 wide with 12 heads and a 3072 FFN; visual layers 1024 wide with 8 heads
  and a 1024 FFN (base model).
  """

  cfg: ViLBERTConfig  # Model configuration.
  stream: Stream  # Sizes and axis names of this layer's stream.

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array, deterministic: bool) -> jax.Array:
    """x ``[B, T, width]``, mask ``[B, T]`` (1 = real token) -> ``[B, T, width]``."""
    s = self.stream
    context = SelfAttention(self.cfg, s.num_heads, s.attention_dropout, s.embed_axis,
                            s.heads_axis, name="attention")(x, mask, deterministic)
    a = ResidualOutput(self.cfg, s.dropout, s.heads_axis, s.embed_axis,
                       name="attention_output")(context, x, deterministic)
    return FeedForward(self.cfg, s.mlp, s.dropout, s.embed_axis, s.mlp_axis,
                       name="ffn")(a, deterministic)
