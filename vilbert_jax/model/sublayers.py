"""The post-LayerNorm residual sublayers shared by the TRM and Co-TRM blocks."""

from __future__ import annotations

import flax.linen as nn
import jax

from vilbert_jax.config import ViLBERTConfig
from vilbert_jax.model.layers import Dropout, dense, gelu, layer_norm


class ResidualOutput(nn.Module):
  """``LayerNorm(residual + Dropout(Dense(h)))``: projects ``h`` back to the stream width."""

  cfg: ViLBERTConfig  # Model configuration.
  dropout_rate: float  # Hidden dropout rate of the stream.
  in_axis: str  # Logical axis of h's width.
  embed_axis: str  # Logical axis of the stream width.

  @nn.compact
  def __call__(self, h: jax.Array, residual: jax.Array, deterministic: bool) -> jax.Array:
    """h ``[B, T, in]``, residual ``[B, T, width]`` -> ``[B, T, width]``."""
    y = dense(self.cfg, residual.shape[-1], (self.in_axis, self.embed_axis), "dense")(h)
    y = Dropout(self.dropout_rate)(y, deterministic=deterministic)
    return layer_norm(self.cfg, self.embed_axis, "layer_norm")(residual + y)


class FeedForward(nn.Module):
  """``LayerNorm(x + Dropout(Dense(gelu(Dense(x)))))`` with inner width ``hidden``."""

  cfg: ViLBERTConfig  # Model configuration.
  hidden: int  # Inner (intermediate) width.
  dropout_rate: float  # Hidden dropout rate of the stream.
  embed_axis: str  # Logical axis of the stream width.
  mlp_axis: str  # Logical axis of the inner width.

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
    """``[B, T, width] -> [B, T, width]``."""
    h = gelu(dense(self.cfg, self.hidden, (self.embed_axis, self.mlp_axis), "intermediate")(x))
    return ResidualOutput(self.cfg, self.dropout_rate, self.mlp_axis, self.embed_axis,
                          name="output")(h, x, deterministic)
