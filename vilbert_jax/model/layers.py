"""Parameterised building blocks shared by every ViLBERT module.

Each factory creates a linen layer whose parameters carry logical axis names, initialised as
the original (``N(0, initializer_range)`` weights, zero biases, LayerNorm ones/zeros). The
logical names are listed in ``vilbert_jax.sharding``; the text width, the visual width and the
co-attention width have different names so they can be sharded independently.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from vilbert_jax.config import ViLBERTConfig


def gelu(x: jax.Array) -> jax.Array:
  """The exact (erf) GELU of the original; JAX's default is the tanh approximation."""
  return jax.nn.gelu(x, approximate=False)


def dense(cfg: ViLBERTConfig, features: int, axes: tuple[str | None, str | None],
          name: str) -> nn.Dense:
  """``Dense`` with kernel ``[in, out]`` named ``axes`` and bias named ``axes[1]``."""
  return nn.Dense(
      features, dtype=cfg.compute_dtype, param_dtype=cfg.parameter_dtype,
      kernel_init=nn.with_logical_partitioning(
          nn.initializers.normal(cfg.initializer_range), axes),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (axes[1],)),
      name=name)


def embed(cfg: ViLBERTConfig, num_embeddings: int, features: int,
          axes: tuple[str | None, str | None], name: str) -> nn.Embed:
  """Lookup table ``[num_embeddings, features]`` named ``axes``."""
  return nn.Embed(
      num_embeddings, features, dtype=cfg.compute_dtype, param_dtype=cfg.parameter_dtype,
      embedding_init=nn.with_logical_partitioning(
          nn.initializers.normal(cfg.initializer_range), axes),
      name=name)


def layer_norm(cfg: ViLBERTConfig, axis_name: str, name: str) -> nn.LayerNorm:
  """LayerNorm (biased variance) computed and returned in float32.

  Its outputs form the residual stream, which therefore stays float32 under bfloat16 compute;
  the next ``Dense`` casts its input to the compute dtype.
  """
  return nn.LayerNorm(
      epsilon=cfg.layer_norm_eps, dtype=jnp.float32, param_dtype=cfg.parameter_dtype,
      scale_init=nn.with_logical_partitioning(nn.initializers.ones, (axis_name,)),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (axis_name,)),
      name=name)
