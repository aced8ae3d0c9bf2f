"""The paper's single-stream baseline: one BERT over ``[text tokens ; IMG + regions]``."""

from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from vilbert_jax.config import ViLBERTConfig
from vilbert_jax.model.embeddings import ImageEmbeddings, TextEmbeddings
from vilbert_jax.model.encoder import INTERMEDIATES, maybe_remat
from vilbert_jax.model.heads import Pooler
from vilbert_jax.model.inputs import default_image_mask, default_text_inputs
from vilbert_jax.model.outputs import BackboneOutput
from vilbert_jax.model.streams import text_stream
from vilbert_jax.model.trm import TransformerLayer


class SingleStreamModel(nn.Module):
  """Text and image embeddings at the text width, ``num_hidden_layers`` TRM layers over their
  concatenation (key masks concatenated), BERT's tanh pooler on ``[CLS]``.

  Image tokens get row 1 of the image embedding's own token-type table and no positions.
  """

  cfg: ViLBERTConfig  # Model configuration (single_stream=True).

  def setup(self):
    cfg = self.cfg
    self.text_embeddings = TextEmbeddings(cfg)
    self.image_embeddings = ImageEmbeddings(cfg, cfg.hidden_size, "text_embed",
                                            cfg.hidden_dropout_prob, with_token_type=True)
    trm = maybe_remat(TransformerLayer, cfg.remat)
    self.layers = [trm(cfg, text_stream(cfg)) for _ in range(cfg.num_hidden_layers)]
    self.pooler = Pooler(cfg, cfg.hidden_size, "text_embed", activation="tanh")

  def __call__(self, input_ids: jax.Array, token_type_ids: Optional[jax.Array] = None,
               attention_mask: Optional[jax.Array] = None, image_feat: jax.Array = None,
               image_loc: jax.Array = None, image_mask: Optional[jax.Array] = None, *,
               deterministic: bool = True) -> BackboneOutput:
    """Same inputs as ``ViLBERTModel``; every output is at the text width d_t."""
    token_type_ids, attention_mask = default_text_inputs(input_ids, token_type_ids,
                                                         attention_mask)
    image_mask = default_image_mask(image_feat, image_mask)
    text = self.text_embeddings(input_ids, token_type_ids, deterministic)
    image = self.image_embeddings(image_feat, image_loc, deterministic)
    x = jnp.concatenate([text, image.astype(text.dtype)], axis=1)
    mask = jnp.concatenate([attention_mask, image_mask.astype(attention_mask.dtype)], axis=1)
    for i, layer in enumerate(self.layers):
      x = layer(x, mask, deterministic)
      self.sow(INTERMEDIATES, f"layer_{i}", x)
    pooled = self.pooler(x)
    length = input_ids.shape[1]
    return BackboneOutput(x[:, :length], x[:, length:], pooled, pooled, pooled)
