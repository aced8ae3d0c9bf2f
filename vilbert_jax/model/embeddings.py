"""Input embeddings of the text stream and of the visual stream.

The visual side has no learned position, type or IMG embedding in ViLBERT: the IMG token
(slot 0: mean region feature, location ``[0, 0, 1, 1, 1]``) is built by the data pipeline.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from vilbert_jax.config import ViLBERTConfig
from vilbert_jax.model.layers import Dropout, dense, embed, layer_norm


class TextEmbeddings(nn.Module):
  """``Dropout(LayerNorm(word[ids] + position[0..T-1] + token_type[segment]))``.

  ``word_embeddings.embedding`` ``[vocab, d_t]`` is also the (transposed) masked-word decoder.
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
    self.layer_norm = layer_norm(cfg, "text_embed", "layer_norm")
    self.dropout = Dropout(cfg.hidden_dropout_prob)

  def __call__(self, input_ids: jax.Array, token_type_ids: jax.Array,
               deterministic: bool) -> jax.Array:
    """input_ids, token_type_ids ``[B, T]`` int -> ``[B, T, d_t]``."""
    length = input_ids.shape[1]
    if length > self.cfg.max_position_embeddings:
      raise ValueError(f"text length {length} exceeds max_position_embeddings="
                       f"{self.cfg.max_position_embeddings}")
    x = (self.word_embeddings(input_ids) + self.position_embeddings(jnp.arange(length))[None]
         + self.token_type_embeddings(token_type_ids))
    return self.dropout(self.layer_norm(x), deterministic=deterministic)


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
