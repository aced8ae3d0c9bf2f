"""Building blocks shared by every ViLBERT module.

Each factory creates a linen layer whose parameters carry logical axis names, initialised as
the original (``N(0, initializer_range)`` weights, zero biases, LayerNorm ones/zeros). The
logical names are listed in ``vilbert_jax.sharding``; the text width, the visual width and the
co-attention width have different names so they can be sharded independently.

``dense`` and ``einsum`` (the tied word decoder) are the weight matmuls, so the config's
``matmul_dtype`` acts in one place; ``Dropout`` is every dropout. The attention
matmuls (batched, a few percent of the FLOPs) stay in the compute dtype.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vilbert_jax.config import ViLBERTConfig


def gelu(x: jax.Array) -> jax.Array:
  """The exact (erf) GELU of the original; JAX's default is the tanh approximation."""
  return jax.nn.gelu(x, approximate=False)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 3))
def _mixed_einsum(spec: str, a: jax.Array, b: jax.Array, dtype: Any) -> jax.Array:
  """``einsum(spec, a, b)`` on ``dtype`` inputs, accumulated and returned in float32.

  The backward pass does the same (cotangent cast to ``dtype``, float32 results), so all three
  matmuls of a layer run on the fast low-precision units. ``spec`` is ``"A,B->C"`` where
  every index appears in exactly two of A, B, C (true of every matmul here).
  """
  return jnp.einsum(spec, a.astype(dtype), b.astype(dtype), preferred_element_type=jnp.float32)


def _mixed_einsum_fwd(spec, a, b, dtype):
  a, b = a.astype(dtype), b.astype(dtype)
  return jnp.einsum(spec, a, b, preferred_element_type=jnp.float32), (a, b)


def _mixed_einsum_bwd(spec, dtype, residuals, g):
  a, b = residuals
  inputs, out = spec.split("->")
  sa, sb = inputs.split(",")
  g = g.astype(dtype)
  grad_a = jnp.einsum(f"{out},{sb}->{sa}", g, b, preferred_element_type=jnp.float32)
  grad_b = jnp.einsum(f"{sa},{out}->{sb}", a, g, preferred_element_type=jnp.float32)
  return grad_a, grad_b


_mixed_einsum.defvjp(_mixed_einsum_fwd, _mixed_einsum_bwd)


def einsum(cfg: ViLBERTConfig, spec: str, a: jax.Array, b: jax.Array) -> jax.Array:
  """``jnp.einsum(spec, a, b)`` of an unbatched matmul; with ``cfg.mixed_matmul``, on
  ``cfg.matmul_dtype`` inputs with float32 accumulation and a float32 result."""
  if cfg.mixed_matmul:
    return _mixed_einsum(spec, a, b, jnp.dtype(cfg.matmul_dtype))
  return jnp.einsum(spec, a, b)


def _dense_dot_general(cfg: ViLBERTConfig):
  """``Dense``'s ``dot_general`` under ``cfg.mixed_matmul`` (None: ``lax.dot_general``)."""
  if not cfg.mixed_matmul:
    return None

  def dot_general(x, kernel, dimension_numbers, precision=None):
    del precision
    assert dimension_numbers == (((x.ndim - 1,), (0,)), ((), ())), dimension_numbers
    return einsum(cfg, "...i,io->...o", x, kernel)
  return dot_general


def dense(cfg: ViLBERTConfig, features: int, axes: tuple[str | None, str | None],
          name: str) -> nn.Dense:
  """``Dense`` with kernel ``[in, out]`` named ``axes`` and bias named ``axes[1]``."""
  return nn.Dense(
      features, dtype=cfg.compute_dtype, param_dtype=cfg.parameter_dtype,
      dot_general=_dense_dot_general(cfg),
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


# ---------------------------------------------------------------------- dropout
_THREEFRY_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))


def _rotate_left(x: jax.Array, d: int) -> jax.Array:
  return (x << np.uint32(d)) | (x >> np.uint32(32 - d))


def _flat_index(shape: tuple[int, ...]) -> jax.Array:
  """uint32 ``shape``: each element's row-major flat index (a sum of per-axis iotas, which the
  SPMD partitioner splits like the array)."""
  if np.prod(shape, dtype=np.int64) >= 2**32:
    raise ValueError(f"dropout over {shape} needs more than 2**32 counters")
  strides = np.cumprod((shape[1:] + (1,))[::-1])[::-1]
  return sum(jax.lax.broadcasted_iota(jnp.uint32, shape, d) * np.uint32(s)
             for d, s in enumerate(strides))


def _threefry_bits(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """``jax.random.bits(key, shape)`` (uint32) of a threefry key under the default
  ``jax_threefry_partitionable``: threefry2x32 of the element's flat index, unrolled.

  JAX lowers the same hash on CPU as a rolled loop, which XLA runs several times slower.
  """
  k1, k2 = jax.random.key_data(key)
  ks = (k1, k2, k1 ^ k2 ^ np.uint32(0x1BD11BDA))
  # The 64-bit counter is the flat index: high word 0 (fewer than 2**32 elements), low word.
  x = [jnp.zeros(shape, jnp.uint32) + ks[0], _flat_index(shape) + ks[1]]
  for i in range(5):
    for r in _THREEFRY_ROTATIONS[i % 2]:
      x[0] = x[0] + x[1]
      x[1] = x[0] ^ _rotate_left(x[1], r)
    x = [x[0] + ks[(i + 1) % 3], x[1] + ks[(i + 2) % 3] + np.uint32(i + 1)]
  return x[0] ^ x[1]


def keep_mask(key: jax.Array, keep_prob: float, shape: tuple[int, ...]) -> jax.Array:
  """``jax.random.bernoulli(key, keep_prob, shape)``: bool, True with probability
  ``keep_prob``; bit for bit, computed by ``_threefry_bits`` when ``key`` is a threefry key
  (JAX's default) under the default ``jax_threefry_partitionable``."""
  if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):  # a raw uint32 key: the default impl
    key = jax.random.wrap_key_data(key)
  if not (str(jax.random.key_impl(key)) == "threefry2x32"
          and jax.config.jax_threefry_partitionable):
    return jax.random.bernoulli(key, keep_prob, shape)
  # jax.random.uniform: 23 random mantissa bits of a float in [1, 2), minus 1.
  bits = _threefry_bits(key, shape)
  floats = jax.lax.bitcast_convert_type((bits >> np.uint32(9)) | np.uint32(0x3F800000),
                                        jnp.float32) - 1.0
  return floats < jnp.float32(keep_prob)


class Dropout(nn.Module):
  """``nn.Dropout`` with the same masks, drawn by ``keep_mask`` (JAX lowers its threefry hash
  on CPU as a rolled loop, several times slower than this unrolled one).

  Zeroes each element with probability ``rate`` and scales the rest by ``1 / (1 - rate)``;
  draws its key from the ``dropout`` RNG collection.
  """

  rate: float  # Probability of zeroing an element, in [0, 1).

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
    """``x`` of any shape -> same shape and dtype."""
    if deterministic or self.rate == 0:
      return x
    keep_prob = 1.0 - self.rate
    mask = keep_mask(self.make_rng("dropout"), keep_prob, x.shape)
    return jax.lax.select(mask, x / keep_prob, jnp.zeros_like(x))
