"""Scoring every (caption, image) pair of a retrieval split with one jitted function.

The text layers before the first co-attention layer do not depend on the image, so each
caption's ``text_prefix`` is computed once and paired with blocks of images; only the layers
from the first co-attention on run per pair. Blocks have fixed shapes (the last ones padded),
so the scorer compiles once.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

TEXT_KEYS = ("input_ids", "token_type_ids", "attention_mask")
IMAGE_KEYS = ("image_feat", "image_loc", "image_mask")


def alignment_match_probability(out: Any) -> jax.Array:
  """Zero-shot score: P(caption matches image) = softmax(alignment logits)[:, 0]."""
  return jax.nn.softmax(out.alignment_logits, axis=-1)[:, 0]


def _pad_to(x: np.ndarray, n: int) -> np.ndarray:
  return np.concatenate([x, np.zeros((n - len(x),) + x.shape[1:], x.dtype)]) if len(x) < n else x


def score_all_pairs(model: Any, params: Any, captions: Mapping[str, np.ndarray],
                    images: Mapping[str, np.ndarray], score_fn: Callable[[Any], jax.Array] =
                    alignment_match_probability, caption_block: int = 16,
                    image_block: int = 32) -> np.ndarray:
  """Scores ``[num_captions, num_images]`` (float32) of every caption with every image.

  Args:
    model: a model whose ``apply`` takes the six inputs and ``text_hidden=`` (two-stream), and
      whose ``backbone.text_prefix`` gives that prefix.
    captions: ``input_ids/token_type_ids/attention_mask [C, T]``.
    images: ``image_feat [I, R, D]``, ``image_loc [I, R, 5]``, ``image_mask [I, R]``.
    score_fn: model output -> per-pair score ``[pairs]``.
  """
  two_stream = not model.cfg.single_stream

  @jax.jit
  def prefix(params, text):
    return model.apply({"params": params}, *(text[k] for k in TEXT_KEYS),
                       method=lambda m, *a: m.backbone.text_prefix(*a))

  @jax.jit
  def score_block(params, text, hidden, image):
    c, i = text["input_ids"].shape[0], image["image_feat"].shape[0]
    per_pair_text = {k: jnp.repeat(v, i, axis=0) for k, v in text.items()}
    per_pair_image = {k: jnp.tile(v, (c,) + (1,) * (v.ndim - 1)) for k, v in image.items()}
    extra = {"text_hidden": jnp.repeat(hidden, i, axis=0)} if two_stream else {}
    out = model.apply({"params": params}, *(per_pair_text[k] for k in TEXT_KEYS),
                      *(per_pair_image[k] for k in IMAGE_KEYS), **extra)
    return score_fn(out).reshape(c, i)

  num_captions, num_images = len(captions["input_ids"]), len(images["image_feat"])
  scores = np.zeros((num_captions, num_images), np.float32)
  for c0 in range(0, num_captions, caption_block):
    text = {k: _pad_to(captions[k][c0:c0 + caption_block], caption_block) for k in TEXT_KEYS}
    hidden = prefix(params, text) if two_stream else None
    for i0 in range(0, num_images, image_block):
      image = {k: _pad_to(images[k][i0:i0 + image_block], image_block) for k in IMAGE_KEYS}
      block = np.asarray(score_block(params, text, hidden, image))
      scores[c0:c0 + caption_block, i0:i0 + image_block] = block[
          :min(caption_block, num_captions - c0), :min(image_block, num_images - i0)]
  return scores
