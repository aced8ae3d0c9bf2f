"""Scoring every (caption, image) pair of a retrieval split with one jitted function.

The text layers before the first co-attention layer do not depend on the image, so each
caption's ``text_prefix`` is computed once and paired with blocks of images; only the layers
from the first co-attention on run per pair. Blocks have fixed shapes (the last ones padded),
so the scorer compiles once.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np

from vilbert_jax.model.inputs import IMAGE_INPUTS, TEXT_INPUTS


def alignment_match_probability(out: Any) -> jax.Array:
  """Zero-shot score: P(caption matches image) = softmax(alignment logits)[:, 0]."""
  return jax.nn.softmax(out.alignment_logits, axis=-1)[:, 0]


def _pad_to(x: np.ndarray, n: int) -> np.ndarray:
  return np.concatenate([x, np.zeros((n - len(x),) + x.shape[1:], x.dtype)]) if len(x) < n else x


class PairScorer:
  """Scores blocks of (caption, image) pairs; the two jitted functions compile once each.

  Attributes:
    prefix: ``prefix(params, text) -> [caption_block, T, d_t]`` text stream before the first
      co-attention layer (two-stream models; ``T+1`` positions with task tokens).
    score_block: ``score_block(params, text, hidden, image) -> [caption_block, image_block]``.
  """

  def __init__(self, model: Any, score_fn: Callable[[Any], jax.Array] =
               alignment_match_probability, caption_block: int = 16, image_block: int = 32,
               task_id: Optional[int] = None):
    """``task_id``: the original's task id of every pair (models with task tokens only)."""
    self.caption_block, self.image_block = caption_block, image_block
    self.two_stream = not model.cfg.single_stream

    def task_ids(n: int) -> dict[str, jax.Array]:
      return {} if task_id is None else {"task_ids": jnp.full((n,), task_id, jnp.int32)}

    def prefix(params, text):
      return model.apply({"params": params}, *(text[k] for k in TEXT_INPUTS),
                         **task_ids(text["input_ids"].shape[0]),
                         method=lambda m, *a, **kw: m.backbone.text_prefix(*a, **kw))

    def score_block(params, text, hidden, image):
      c, i = text["input_ids"].shape[0], image["image_feat"].shape[0]
      per_pair_text = {k: jnp.repeat(v, i, axis=0) for k, v in text.items()}
      per_pair_image = {k: jnp.tile(v, (c,) + (1,) * (v.ndim - 1)) for k, v in image.items()}
      extra = {"text_hidden": jnp.repeat(hidden, i, axis=0)} if self.two_stream else {}
      out = model.apply({"params": params}, *(per_pair_text[k] for k in TEXT_INPUTS),
                        *(per_pair_image[k] for k in IMAGE_INPUTS), **extra,
                        **task_ids(c * i))
      return score_fn(out).reshape(c, i)

    self.prefix, self.score_block = jax.jit(prefix), jax.jit(score_block)

  def __call__(self, params: Any, captions: Mapping[str, np.ndarray],
               images: Mapping[str, np.ndarray]) -> np.ndarray:
    """Scores ``[num_captions, num_images]`` (float32); see ``score_all_pairs``."""
    cb, ib = self.caption_block, self.image_block
    num_captions, num_images = len(captions["input_ids"]), len(images["image_feat"])
    scores = np.zeros((num_captions, num_images), np.float32)
    image_blocks = [{k: _pad_to(images[k][i0:i0 + ib], ib) for k in IMAGE_INPUTS}
                    for i0 in range(0, num_images, ib)]
    for c0 in range(0, num_captions, cb):
      text = {k: _pad_to(captions[k][c0:c0 + cb], cb) for k in TEXT_INPUTS}
      hidden = self.prefix(params, text) if self.two_stream else None
      for b, image in enumerate(image_blocks):
        i0 = b * ib
        block = np.asarray(self.score_block(params, text, hidden, image))
        scores[c0:c0 + cb, i0:i0 + ib] = block[:min(cb, num_captions - c0),
                                               :min(ib, num_images - i0)]
    return scores


def score_all_pairs(model: Any, params: Any, captions: Mapping[str, np.ndarray],
                    images: Mapping[str, np.ndarray], score_fn: Callable[[Any], jax.Array] =
                    alignment_match_probability, caption_block: int = 16,
                    image_block: int = 32, task_id: Optional[int] = None) -> np.ndarray:
  """Scores ``[num_captions, num_images]`` (float32) of every caption with every image.

  Args:
    model: a model whose ``apply`` takes the six inputs and ``text_hidden=`` (two-stream), and
      whose ``backbone.text_prefix`` gives that prefix.
    captions: ``input_ids/token_type_ids/attention_mask [C, T]``.
    images: ``image_feat [I, R, D]``, ``image_loc [I, R, 5]``, ``image_mask [I, R]``.
    score_fn: model output -> per-pair score ``[pairs]``.
    caption_block, image_block: pairs scored per call (the last blocks are padded).
    task_id: the original's task id of every pair (models with task tokens only).
  """
  return PairScorer(model, score_fn, caption_block, image_block, task_id)(params, captions,
                                                                         images)
