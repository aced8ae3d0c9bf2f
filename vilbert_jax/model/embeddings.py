"""Input embeddings of the text stream and of the visual stream.

The visual side has no learned position, type or IMG embedding in ViLBERT: the IMG token
(slot 0: mean region feature, location ``[0, 0, 1, 1, 1]``) is built by the data pipeline.
"""

from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from vilbert_jax.config import NUM_TASK_TOKENS, ViLBERTConfig
from vilbert_jax.model.layers import Dropout, dense, embed, layer_norm


class TextEmbeddings(nn.Module):
  """``Dropout(LayerNorm(word[ids] + position[0..T-1] + token_type[segment]))``.

  ``word_embeddings.embedding`` ``[vocab, d_t]`` is also the (transposed) masked-word decoder.
  With ``cfg.task_specific_tokens`` (12-in-1), ``task_embeddings[task_ids]`` is inserted between
  [CLS] and the first word before the LayerNorm: no position or token-type embedding is added
  to it and the words keep their positions 1..T-1, so the output has T+1 rows.
  """

  cfg: ViLBERTConfig  # Model configuration.

  def setup(self):
    cfg = self.cfg
    self.word_embeddings = embed(cfg, cfg.vocab_size, cfg.hidden_size, ("vocab", "text_embed"),
                                 "word_embeddings")
    self.position_embeddings = embed(cfg, cfg.max_position_embeddings, cfg.hidden_size,
                                     ("text_positions", "text_embed"), "position_embeddings")
    self.token_type_embeddings = embed(cfg, cfg.type_vocab_size, cfg.hidden_size,
                                       ("token_types", "text_embed"), "token_type_embeddings")
    if cfg.task_specific_tokens:
      self.task_embeddings = embed(cfg, NUM_TASK_TOKENS, cfg.hidden_size,
                                   ("task_tokens", "text_embed"), "task_embeddings")
    self.layer_norm = layer_norm(cfg, "text_embed", "layer_norm")
    self.dropout = Dropout(cfg.hidden_dropout_prob)

  def __call__(self, input_ids: jax.Array, token_type_ids: jax.Array, deterministic: bool,
               task_ids: Optional[jax.Array] = None) -> jax.Array:
    """input_ids, token_type_ids ``[B, T]`` int -> ``[B, T, d_t]``; with task tokens,
    ``task_ids [B]`` int (original ids, < NUM_TASK_TOKENS) -> ``[B, T+1, d_t]``."""
    length = input_ids.shape[1]
    if length > self.cfg.max_position_embeddings:
      raise ValueError(f"text length {length} exceeds max_position_embeddings="
                       f"{self.cfg.max_position_embeddings}")
    x = (self.word_embeddings(input_ids) + self.position_embeddings(jnp.arange(length))[None]
         + self.token_type_embeddings(token_type_ids))
    if self.cfg.task_specific_tokens:
      task = self.task_embeddings(checked_task_ids(task_ids, input_ids.shape[0],
                                                   self.is_initializing()))
      x = jnp.concatenate([x[:, :1], task[:, None].astype(x.dtype), x[:, 1:]], axis=1)
    elif task_ids is not None:
      raise ValueError("task_ids given, but the model has no task tokens "
                       "(ViLBERTConfig.task_specific_tokens is False)")
    return self.dropout(self.layer_norm(x), deterministic=deterministic)


def checked_task_ids(task_ids: Optional[jax.Array], batch: int,
                     initializing: bool) -> jax.Array:
  """``task_ids`` as int ``[B]``; while initialising, missing ids default to row 0."""
  if task_ids is None:
    if not initializing:
      raise ValueError("this model has task tokens (task_specific_tokens): pass task_ids [B], "
                       "the original's task id of every example")
    return jnp.zeros((batch,), jnp.int32)
  if task_ids.shape != (batch,):
    raise ValueError(f"task_ids has shape {task_ids.shape}; expected [{batch}], one id per "
                     "example (options flattened into the batch)")
  return task_ids


def text_attention_mask(cfg: ViLBERTConfig, attention_mask: jax.Array) -> jax.Array:
  """The text mask the encoder uses: ``[B, T]``, or ``[B, T+1]`` with a leading 1 (the task
  token, always attended; [CLS] is always valid, so this equals a 1 inserted at position 1)."""
  if not cfg.task_specific_tokens:
    return attention_mask
  return jnp.pad(attention_mask, ((0, 0), (1, 0)), constant_values=1)


class ImageEmbeddings(nn.Module):
  """``Dropout(LayerNorm(Dense(features) + Dense(location)))`` -> ``[B, R, width]``.

  ``width`` is d_v for ViLBERT. The single-stream baseline (``with_token_type=True``) embeds
  regions at the text width and adds row 1 of its own 2-row token-type table.
  """

  cfg: ViLBERTConfig  # Model configuration.
  width: int  # Output width.
  embed_axis: str  # Logical axis of the output width.
  dropout_rate: float  # Hidden dropout rate.
  with_token_type: bool = False  # Single-stream baseline: add token_type_embeddings[1].

  @nn.compact
  def __call__(self, image_feat: jax.Array, image_loc: jax.Array,
               deterministic: bool) -> jax.Array:
    """image_feat ``[B, R, v_feature_size]``, image_loc ``[B, R, 5]`` (fractions of W/H)."""
    if image_feat.shape[-1] != self.cfg.v_feature_size:
      raise ValueError(f"image_feat has width {image_feat.shape[-1]}, the model expects "
                       f"v_feature_size={self.cfg.v_feature_size}")
    x = dense(self.cfg, self.width, ("region_features", self.embed_axis), "features")(image_feat)
    if self.with_token_type:
      table = embed(self.cfg, 2, self.width, ("token_types", self.embed_axis),
                    "token_type_embeddings")
      x = x + table(jnp.ones(image_feat.shape[:2], jnp.int32))
    x = x + dense(self.cfg, self.width, ("region_location", self.embed_axis),
                  "locations")(image_loc)
    x = layer_norm(self.cfg, self.embed_axis, "layer_norm")(x)
    return Dropout(self.dropout_rate)(x, deterministic=deterministic)
