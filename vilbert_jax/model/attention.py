"""Multi-head scaled dot-product attention with the original's additive key mask.

``AttentionCore`` turns projected queries/keys/values into a context; ``QKVProjection`` makes
them from a stream; ``SelfAttention`` is the two together (the TRM block's attention). The
co-attention block reuses both with queries from one stream and keys/values from the other.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from vilbert_jax.config import ViLBERTConfig
from vilbert_jax.model.layers import Dropout, dense

ATTENTION_MAPS = "attention_maps"  # Collection that receives attention probabilities.


def additive_key_mask(key_mask: jax.Array) -> jax.Array:
  """``[batch, keys]`` 0/1 mask -> ``[batch, 1, 1, keys]`` float32 bias: 0 kept, -10000 masked.

  Only keys are masked (padded queries are computed and carried along), exactly as the
  original ``(1 - mask) * -10000``.
  """
  return ((1.0 - key_mask.astype(jnp.float32)) * -10000.0)[:, None, None, :]


class AttentionCore(nn.Module):
  """softmax(q kᵀ / √head_dim + mask) v over ``num_heads`` heads; no parameters.

  Uses ``jax.nn.dot_product_attention`` (fused, cuDNN on GPU when ``impl='cudnn'``) unless
  attention-probability dropout is active or the maps are requested — the fused kernels have
  neither — in which case the explicit float32 softmax path runs. Both compute the same
  function. Apply with ``mutable=[ATTENTION_MAPS]`` to collect the probabilities
  ``[batch, heads, queries, keys]`` (sown as ``probs``).
  """

  num_heads: int  # Number of heads; the input width must be divisible by it.
  dropout_rate: float  # Attention-probability dropout rate.
  impl: str  # "auto" | "explicit" | "cudnn" (see ViLBERTConfig.attention_impl).

  @nn.compact
  def __call__(self, query: jax.Array, key: jax.Array, value: jax.Array,
               key_mask: jax.Array, deterministic: bool) -> jax.Array:
    """query ``[B, Tq, W]``, key/value ``[B, Tk, W]``, key_mask ``[B, Tk]`` -> ``[B, Tq, W]``."""
    batch, q_len, width = query.shape
    head_dim = width // self.num_heads
    split = lambda x: x.reshape(x.shape[0], x.shape[1], self.num_heads, head_dim)
    q, k, v = split(query), split(key), split(value)
    bias = additive_key_mask(key_mask)
    want_maps = self.is_mutable_collection(ATTENTION_MAPS)
    dropout_active = not deterministic and self.dropout_rate > 0
    if self.impl == "cudnn" and (want_maps or dropout_active):
      raise ValueError("attention_impl='cudnn' cannot return attention maps or apply "
                       "attention-probability dropout; use 'auto' or 'explicit'")
    if self.impl == "cudnn" or (self.impl == "auto" and not (want_maps or dropout_active)):
      context = jax.nn.dot_product_attention(
          q, k, v, bias=bias.astype(q.dtype), scale=1.0 / math.sqrt(head_dim),
          implementation="cudnn" if self.impl == "cudnn" else None)
    else:
      # Float32 even under matmul_dtype (XLA:CPU has no bf16 x bf16 = f32 batched dot).
      logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
      probs = jax.nn.softmax(logits / math.sqrt(head_dim) + bias, axis=-1)
      if want_maps:
        self.sow(ATTENTION_MAPS, "probs", probs)
      probs = Dropout(self.dropout_rate)(probs, deterministic=deterministic)
      context = jnp.einsum("bhqk,bkhd->bqhd", probs.astype(v.dtype), v)
    return context.reshape(batch, q_len, width)


class QKVProjection(nn.Module):
  """Three ``Dense(in -> width)`` maps of one stream: query, key and value ``[B, T, width]``.

  (Three matmuls: one matmul on the stacked or concatenated kernels measured slower on CPU.)
  """

  cfg: ViLBERTConfig  # Model configuration (dtypes, init).
  width: int  # Output width of each projection (heads x head_dim).
  in_axis: str  # Logical axis of the input width.
  out_axis: str  # Logical axis of the projected width.

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    axes = (self.in_axis, self.out_axis)
    return tuple(dense(self.cfg, self.width, axes, name)(x) for name in ("query", "key", "value"))


class SelfAttention(nn.Module):
  """BERT self-attention context (before the output projection): ``[B, T, W] -> [B, T, W]``."""

  cfg: ViLBERTConfig  # Model configuration.
  num_heads: int  # Attention heads.
  dropout_rate: float  # Attention-probability dropout rate.
  embed_axis: str  # Logical axis of the stream width.
  heads_axis: str  # Logical axis of the projected (heads x head_dim) width.

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array, deterministic: bool) -> jax.Array:
    q, k, v = QKVProjection(self.cfg, x.shape[-1], self.embed_axis, self.heads_axis,
                            name="qkv")(x)
    return AttentionCore(self.num_heads, self.dropout_rate, self.cfg.attention_impl,
                         name="core")(q, k, v, mask, deterministic)
