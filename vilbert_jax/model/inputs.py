"""The model inputs: their names in order, and defaults for the optional ones (as the
original code has them)."""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

# Positional inputs of every model, in order; batches use the same keys.
TEXT_INPUTS = ("input_ids", "token_type_ids", "attention_mask")  # [B, T] int32 each
IMAGE_INPUTS = ("image_feat", "image_loc", "image_mask")  # [B, R, D], [B, R, 5], [B, R]
MODEL_INPUTS = TEXT_INPUTS + IMAGE_INPUTS


def default_text_inputs(input_ids: jax.Array, token_type_ids: Optional[jax.Array],
                        attention_mask: Optional[jax.Array]) -> tuple[jax.Array, jax.Array]:
  """Token types default to 0 and the attention mask to all ones: ``[B, T]`` each."""
  if token_type_ids is None:
    token_type_ids = jnp.zeros_like(input_ids)
  if attention_mask is None:
    attention_mask = jnp.ones_like(input_ids)
  return token_type_ids, attention_mask


def default_image_mask(image_feat: jax.Array, image_mask: Optional[jax.Array]) -> jax.Array:
  """Every region attended by default: ``[B, R]``."""
  if image_feat is None:
    raise ValueError("image_feat [batch, regions, v_feature_size] is required")
  return jnp.ones(image_feat.shape[:2], jnp.int32) if image_mask is None else image_mask
