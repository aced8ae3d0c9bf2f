"""Poolers and the three pretraining heads (masked words, masked regions, alignment)."""

from __future__ import annotations

import math
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from vilbert_jax.config import ViLBERTConfig
from vilbert_jax.model.layers import Dropout, dense, einsum, gelu, layer_norm


class Pooler(nn.Module):
  """``activation(Dense(sequence[:, 0]))``: token 0 is ``[CLS]`` (text) or IMG (image).

  ViLBERT pools both streams with ReLU into the co-attention width; the single-stream baseline
  uses BERT's tanh pooler.
  """

  cfg: ViLBERTConfig  # Model configuration.
  features: int  # Pooled width.
  in_axis: str  # Logical axis of the stream width.
  activation: str = "relu"  # "relu" (ViLBERT) or "tanh" (BERT / single-stream).

  @nn.compact
  def __call__(self, sequence: jax.Array) -> jax.Array:
    """``[B, L, width] -> [B, features]``."""
    act = {"relu": nn.relu, "tanh": jnp.tanh}[self.activation]
    return act(dense(self.cfg, self.features, (self.in_axis, "pooled"), "dense")(sequence[:, 0]))


class PredictionTransform(nn.Module):
  """``LayerNorm(gelu(Dense(x)))`` at the input width: the first half of both token heads."""

  cfg: ViLBERTConfig  # Model configuration.
  embed_axis: str  # Logical axis of the input width.
  mlp_axis: str  # Logical axis used for the transform's output width.

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = gelu(dense(self.cfg, x.shape[-1], (self.embed_axis, self.mlp_axis), "dense")(x))
    return layer_norm(self.cfg, self.embed_axis, "layer_norm")(x)


class MaskedLMHead(nn.Module):
  """Masked-word logits: transform, then the tied word-embedding matrix plus its own bias."""

  cfg: ViLBERTConfig  # Model configuration.

  @nn.compact
  def __call__(self, text_sequence: jax.Array, word_embeddings: jax.Array) -> jax.Array:
    """text_sequence ``[..., d_t]``, word_embeddings ``[vocab, d_t]`` -> float32 ``[..., vocab]``."""
    x = PredictionTransform(self.cfg, "text_embed", "text_mlp", name="transform")(text_sequence)
    dtype = self.cfg.compute_dtype
    logits = einsum(self.cfg, "...d,vd->...v", x.astype(dtype), word_embeddings.astype(dtype))
    bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, ("vocab",)),
                      (self.cfg.vocab_size,), self.cfg.parameter_dtype)
    return logits.astype(jnp.float32) + bias.astype(jnp.float32)


class RegionHead(nn.Module):
  """Masked-region logits over the detector classes (not tied): ``[..., v_target_size]``."""

  cfg: ViLBERTConfig  # Model configuration.
  embed_axis: str  # Logical axis of the image-sequence width.
  mlp_axis: str  # Logical axis used for the transform's output width.

  @nn.compact
  def __call__(self, image_sequence: jax.Array) -> jax.Array:
    x = PredictionTransform(self.cfg, self.embed_axis, self.mlp_axis,
                            name="transform")(image_sequence)
    logits = dense(self.cfg, self.cfg.v_target_size, (self.embed_axis, "region_classes"),
                   "decoder")(x)
    return logits.astype(jnp.float32)


def region_head(cfg: ViLBERTConfig) -> RegionHead:
  """The region head on the visual stream (on the image part of the single stream)."""
  if cfg.single_stream:
    return RegionHead(cfg, "text_embed", "text_mlp")
  return RegionHead(cfg, "visual_embed", "visual_mlp")


class AlignmentHead(nn.Module):
  """Image-text alignment logits ``[B, 2]`` from the fused pooled vector; class 0 = match."""

  cfg: ViLBERTConfig  # Model configuration.

  @nn.compact
  def __call__(self, pooled: jax.Array, deterministic: bool) -> jax.Array:
    x = Dropout(self.cfg.hidden_dropout_prob)(pooled, deterministic=deterministic)
    return dense(self.cfg, 2, ("pooled", "classes"), "dense")(x).astype(jnp.float32)


# ``logits_where`` gathers positions per group of up to _GATHER_GROUP examples into
# _GATHER_FRACTION of the group's positions (rounded up to a multiple of 8). With the paper's
# 15% masking a group never has more labelled positions than that; if one has, every position
# is computed instead (same result, full cost).
_GATHER_GROUP = 8
_GATHER_FRACTION = 0.25


def logits_where(head: Callable[..., jax.Array], mdl: nn.Module, sequence: jax.Array,
                 where: jax.Array, *head_args: jax.Array) -> jax.Array:
  """``head(mdl, sequence, *head_args)`` at the positions where ``where``; 0 elsewhere.

  The token heads are per position, so computing them only where a loss reads them (the
  masked words and regions, about 15% of the positions in pretraining) leaves the losses
  unchanged and skips most of the 30522-way decoder.

  Args:
    head: ``(mdl, x [G, N, D], *head_args) -> [G, N, C]`` (float32), e.g. a call of one of
      ``mdl``'s heads.
    mdl: the module owning the head (passed through ``nn.cond``).
    sequence: ``[B, L, D]`` the head's input.
    where: ``[B, L]`` bool, the positions to compute.
    *head_args: further arrays for ``head`` (e.g. the tied word embeddings).

  Returns:
    float32 ``[B, L, C]``: the head's logits where ``where``, 0 elsewhere.
  """
  batch, length = where.shape
  group = math.gcd(batch, _GATHER_GROUP)
  rows = group * length
  capacity = min(rows, 8 * math.ceil(rows * _GATHER_FRACTION / 8))
  seq = sequence.reshape(batch // group, rows, sequence.shape[-1])
  where = where.reshape(batch // group, rows)

  def everywhere(mdl, seq, where, *head_args):
    return jnp.where(where[..., None], head(mdl, seq, *head_args), 0.0)

  def gathered(mdl, seq, where, *head_args):
    index = jnp.argsort(~where, axis=-1, stable=True)[:, :capacity]  # labelled rows first
    logits = head(mdl, jnp.take_along_axis(seq, index[..., None], axis=1), *head_args)
    logits = jnp.where(jnp.take_along_axis(where, index, axis=1)[..., None], logits, 0.0)
    full = jnp.zeros((seq.shape[0], rows, logits.shape[-1]), logits.dtype)
    return full.at[jnp.arange(seq.shape[0])[:, None], index].set(logits)

  if capacity == rows:
    out = everywhere(mdl, seq, where, *head_args)
  else:
    fits = jnp.all(jnp.sum(where, axis=-1) <= capacity)
    out = nn.cond(fits, gathered, everywhere, mdl, seq, where, *head_args)
  return out.reshape(batch, length, -1)
