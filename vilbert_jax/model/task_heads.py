"""Heads of the downstream tasks (VQA classifiers, scores) in the original's two variants.

NeurIPS 2019 release: the VQA classifier is a weight-normed MLP
``WN-Dense(d -> 2d), ReLU, Dropout(0.5), WN-Dense(2d -> answers)``.
12-in-1 release: ``Dense(d -> 2d), gelu, LayerNorm, Dense(2d -> answers)``.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from vilbert_jax.config import ViLBERTConfig
from vilbert_jax.model.layers import Dropout, dense, gelu, layer_norm

HEAD_VARIANTS = ("neurips", "12in1")


class WeightNormDense(nn.Module):
  """``x W + b`` with ``W = scale * direction / ‖direction‖_F`` (torch ``weight_norm(dim=None)``).

  Initialised as in the original: BERT's ``normal(0.02)`` re-initialisation does not reach
  weight-normed layers, so ``direction`` and ``bias`` keep ``torch.nn.Linear``'s default,
  ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``, and the scalar ``scale`` starts at the Frobenius norm
  of the initial ``direction``. (A 0.02 init makes the head's logits ~100x smaller and VQA
  fine-tuning stalls at the answer prior.)
  """

  cfg: ViLBERTConfig  # Model configuration.
  features: int  # Output width.
  axes: tuple[str, str]  # Logical axes of the kernel [in, out].

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    cfg = self.cfg
    bound = 1.0 / math.sqrt(x.shape[-1])
    torch_default = lambda key, shape, dtype: jax.random.uniform(  # noqa: E731
        key, shape, dtype, -bound, bound)
    direction = self.param(
        "direction", nn.with_logical_partitioning(torch_default, self.axes),
        (x.shape[-1], self.features), cfg.parameter_dtype)
    norm = jnp.linalg.norm(direction.astype(jnp.float32))
    scale = self.param("scale", nn.with_logical_partitioning(lambda _: norm, ()))
    bias = self.param("bias", nn.with_logical_partitioning(torch_default, (self.axes[1],)),
                      (self.features,), cfg.parameter_dtype)
    kernel = (scale * direction.astype(jnp.float32) / norm).astype(cfg.compute_dtype)
    return x.astype(cfg.compute_dtype) @ kernel + bias.astype(cfg.compute_dtype)


class WeightNormClassifier(nn.Module):
  """NeurIPS VQA head: ``[B, d] -> [B, num_labels]``, hidden width ``2d``."""

  cfg: ViLBERTConfig  # Model configuration.
  num_labels: int  # Number of answers.
  dropout_rate: float = 0.5  # Dropout after the ReLU.

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
    h = nn.relu(WeightNormDense(self.cfg, 2 * x.shape[-1], ("pooled", "task_hidden"),
                                name="hidden")(x))
    h = Dropout(self.dropout_rate)(h, deterministic=deterministic)
    out = WeightNormDense(self.cfg, self.num_labels, ("task_hidden", "answers"), name="output")
    return out(h).astype(jnp.float32)


class GeluClassifier(nn.Module):
  """12-in-1 classifier: ``Dense(d -> hidden), gelu, LayerNorm, Dense(hidden -> labels)``."""

  cfg: ViLBERTConfig  # Model configuration.
  num_labels: int  # Number of classes.
  hidden: int  # Hidden width (2 x pooled width in the released heads).

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
    del deterministic  # The 12-in-1 head has no dropout of its own.
    h = gelu(dense(self.cfg, self.hidden, ("pooled", "task_hidden"), "hidden")(x))
    h = layer_norm(self.cfg, "task_hidden", "layer_norm")(h)
    return dense(self.cfg, self.num_labels, ("task_hidden", "answers"), "output")(h).astype(
        jnp.float32)


def answer_classifier(cfg: ViLBERTConfig, variant: str, num_labels: int,
                      name: str) -> nn.Module:
  """The VQA(/GQA) classifier of the given release on the pooled width."""
  if variant == "neurips":
    return WeightNormClassifier(cfg, num_labels, name=name)
  if variant == "12in1":
    return GeluClassifier(cfg, num_labels, 2 * cfg.pooled_size, name=name)
  raise ValueError(f"unknown head variant {variant!r}; choose from {HEAD_VARIANTS}")


def score_head(cfg: ViLBERTConfig, in_axis: str, name: str, features: int = 1) -> nn.Dense:
  """A linear score ``Dense(width -> features)`` (retrieval/VCR, RefCOCO+ regions, tokens)."""
  return dense(cfg, features, (in_axis, "classes"), name)
