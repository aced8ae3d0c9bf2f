"""Pretraining losses of ViLBERT, with the original label conventions.

-1 marks an ignored masked-word label and an unmasked region; ``image_label`` and
``image_target`` cover the regions only (the IMG slot, index 0 of the model's region logits,
is dropped); alignment class 0 means the caption matches the image.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import optax


def _safe_mean(total: jax.Array, count: jax.Array) -> jax.Array:
  """``total / count``, and 0 (not NaN) when nothing was counted."""
  return jnp.where(count > 0, total / jnp.maximum(count, 1), 0.0)


def masked_lm_loss(mlm_logits: jax.Array, masked_lm_labels: jax.Array) -> jax.Array:
  """Cross-entropy averaged over positions whose label is not -1.

  mlm_logits ``[B, T, vocab]`` (or ``[N, vocab]`` gathered), labels ``[B, T]`` (``[N]``).
  """
  valid = masked_lm_labels >= 0
  per_token = optax.softmax_cross_entropy_with_integer_labels(
      mlm_logits.astype(jnp.float32), jnp.where(valid, masked_lm_labels, 0))
  return _safe_mean(jnp.sum(per_token * valid), jnp.sum(valid))


def masked_region_loss(region_logits: jax.Array, image_label: jax.Array,
                       image_target: jax.Array) -> jax.Array:
  """KL(target ‖ softmax(logits)) per masked region, averaged over masked regions.

  region_logits ``[B, R, C]`` with the IMG slot at index 0 (dropped here); image_label
  ``[B, R-1]`` (1 = masked); image_target ``[B, R-1, C]`` class distributions. 0 when no region
  is masked (the original divides by zero there).
  """
  log_probs = jax.nn.log_softmax(region_logits[:, 1:].astype(jnp.float32), axis=-1)
  target = image_target.astype(jnp.float32)
  safe_log_target = jnp.log(jnp.where(target > 0, target, 1.0))
  kl = jnp.sum(jnp.where(target > 0, target * (safe_log_target - log_probs), 0.0), axis=-1)
  masked = image_label == 1
  return _safe_mean(jnp.sum(kl * masked), jnp.sum(masked))


def alignment_loss(alignment_logits: jax.Array, alignment_label: jax.Array) -> jax.Array:
  """Two-class cross-entropy averaged over the batch (``[B, 2]``, labels ``[B]``)."""
  return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(
      alignment_logits.astype(jnp.float32), alignment_label))


def pretraining_losses(out: Any, masked_lm_labels: jax.Array, image_label: jax.Array,
                       image_target: jax.Array, alignment_label: jax.Array, *,
                       masked_losses_on_mismatched: bool = True) -> Mapping[str, jax.Array]:
  """The three pretraining losses and their equally weighted sum.

  Args:
    out: model output with ``mlm_logits``, ``region_logits`` and ``alignment_logits``.
    masked_lm_labels: ``[B, T]`` original ids at masked positions, -1 elsewhere.
    image_label: ``[B, R-1]`` 1 for masked regions, -1 otherwise.
    image_target: ``[B, R-1, C]`` detector class distribution per region.
    alignment_label: ``[B]`` 0 = matching caption, 1 = random caption.
    masked_losses_on_mismatched: True (the original) computes the masked losses on every pair;
      False (the follow-up code's variant) ignores them on mismatched pairs.

  Returns:
    ``{"masked_lm", "masked_region", "alignment", "total"}`` float32 scalars.
  """
  if not masked_losses_on_mismatched:
    matched = (alignment_label == 0)[:, None]
    masked_lm_labels = jnp.where(matched, masked_lm_labels, -1)
    image_label = jnp.where(matched, image_label, -1)
  losses = {
      "masked_lm": masked_lm_loss(out.mlm_logits, masked_lm_labels),
      "masked_region": masked_region_loss(out.region_logits, image_label, image_target),
      "alignment": alignment_loss(out.alignment_logits, alignment_label),
  }
  losses["total"] = losses["masked_lm"] + losses["masked_region"] + losses["alignment"]
  return losses
