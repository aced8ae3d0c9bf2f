"""Optimisers and learning-rate schedules, configured as data.

* ``adamw``: AdamW with global-norm clipping (the paper's description).
* ``bert_adam``: the original code's ``BertAdam`` — no bias correction, the gradient of every
  parameter tensor clipped to norm 1.0 on its own, epsilon 1e-6, decoupled weight decay added
  to the update. Its weight-decay grouping can be the standard one (no decay on biases and
  LayerNorm) or the original's inverted one (decay *only* on biases and LayerNorm, a known bug).

Schedules: ``warmup_linear_decay`` (linear warmup over ``warmup_fraction`` of the steps, then
linear decay to 0: paper and pretraining code) and ``warmup_constant_steps`` (warmup, then
constant with x``decay_factor`` at each step in ``decay_steps``: the original fine-tuning code).

Learning-rate multipliers and freezing are ``(regex, value)`` pairs matched against parameter
paths such as ``backbone/encoder/text_layers_3/ffn/intermediate/kernel`` (first match wins);
a multiplier of 0 or a match in ``frozen`` leaves a parameter exactly unchanged.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import optax

def path_of(key_path: Sequence[Any]) -> str:
  """``a/b/c`` of a ``jax.tree_util`` key path."""
  return "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in key_path)


def tree_by_regex(params: Any, patterns: Sequence[tuple[str, Any]], default: Any) -> Any:
  """A tree like ``params`` holding, per leaf, the value of the first matching regex."""
  compiled = [(re.compile(p), v) for p, v in patterns]

  def value(key_path, _):
    path = path_of(key_path)
    return next((v for p, v in compiled if p.search(path)), default)
  return jax.tree_util.tree_map_with_path(value, params)


def decay_mask(params: Any, grouping: str) -> Any:
  """True where weight decay applies. "standard": kernels and embeddings; "original_inverted":
  biases and LayerNorm parameters only (what the released training script does)."""
  def is_bias_or_norm(key_path, _):
    path = path_of(key_path)
    return path.endswith("/bias") or "layer_norm/" in path
  by_kind = jax.tree_util.tree_map_with_path(is_bias_or_norm, params)
  if grouping == "standard":
    return jax.tree.map(lambda b: not b, by_kind)
  if grouping == "original_inverted":
    return by_kind
  raise ValueError(f"weight_decay_grouping={grouping!r}: use 'standard' or 'original_inverted'")


def make_schedule(name: str, learning_rate: float, total_steps: int,
                  warmup_fraction: float = 0.1, decay_steps: Sequence[int] = (),
                  decay_factor: float = 0.1) -> optax.Schedule:
  """Learning rate per step (see module docstring)."""
  if total_steps <= 0:
    raise ValueError(f"total_steps={total_steps} must be positive")
  warmup = int(round(warmup_fraction * total_steps))
  if name == "warmup_linear_decay":
    return optax.join_schedules(
        [optax.linear_schedule(0.0, learning_rate, max(warmup, 1)),
         optax.linear_schedule(learning_rate, 0.0, max(total_steps - warmup, 1))], [warmup])
  if name == "warmup_constant_steps":
    boundaries = {int(s) - warmup: decay_factor for s in decay_steps}
    return optax.join_schedules(
        [optax.linear_schedule(0.0, learning_rate, max(warmup, 1)),
         optax.piecewise_constant_schedule(learning_rate, boundaries)], [warmup])
  raise ValueError(f"schedule={name!r}: use 'warmup_linear_decay' or 'warmup_constant_steps'")


def clip_by_global_norm(max_norm: float) -> optax.GradientTransformation:
  """Scales all gradients by ``min(1, max_norm / global_norm)``, as ``clip_grad_norm_``.

  One scalar multiply per element: XLA:CPU fuses it into the moment updates, where
  ``optax.clip_by_global_norm``'s per-element divide-and-select is written out as a clipped
  copy of every gradient and read again (~0.2 s of memory traffic per base-model step).
  """
  def update(updates, state, params=None):
    del params
    scale = jnp.minimum(1.0, max_norm / optax.global_norm(updates))  # norm 0 -> 1
    return jax.tree.map(lambda g: g * scale.astype(g.dtype), updates), state
  return optax.GradientTransformation(lambda _: optax.EmptyState(), update)


def clip_each_tensor(max_norm: float) -> optax.GradientTransformation:
  """Scales every gradient tensor to L2 norm at most ``max_norm``, independently."""
  def update(updates, state, params=None):
    del params
    def clip(g):
      norm = jnp.sqrt(jnp.sum(jnp.square(g.astype(jnp.float32))))
      return (g * jnp.minimum(1.0, max_norm / jnp.maximum(norm, 1e-30))).astype(g.dtype)
    return jax.tree.map(clip, updates), state
  return optax.GradientTransformation(lambda _: optax.EmptyState(), update)


class AdamMoments(NamedTuple):
  mu: Any
  nu: Any


def scale_by_adam_without_bias_correction(b1: float, b2: float,
                                          eps: float) -> optax.GradientTransformation:
  """``m / (sqrt(v) + eps)`` with raw (not bias-corrected) moments, as ``BertAdam``."""
  def init(params):
    zeros = lambda p: jnp.zeros_like(p, dtype=jnp.float32)  # noqa: E731
    return AdamMoments(jax.tree.map(zeros, params), jax.tree.map(zeros, params))

  def update(updates, state, params=None):
    del params
    mu = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, state.mu, updates)
    nu = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * jnp.square(g), state.nu, updates)
    out = jax.tree.map(lambda m, v, g: (m / (jnp.sqrt(v) + eps)).astype(g.dtype), mu, nu,
                       updates)
    return out, AdamMoments(mu, nu)
  return optax.GradientTransformation(init, update)


def scale_per_parameter(multipliers: Any) -> optax.GradientTransformation:
  """Multiplies each update by a fixed per-parameter factor (a tree like the params)."""
  def update(updates, state, params=None):
    del params
    # Inside optax.multi_transform, frozen parameters arrive as MaskedNode placeholders.
    scale = lambda u, m: u if isinstance(u, optax.MaskedNode) or m == 1.0 else u * m  # noqa: E731
    return jax.tree.map(scale, updates, multipliers,
                        is_leaf=lambda x: isinstance(x, optax.MaskedNode)), state
  return optax.GradientTransformation(lambda _: optax.EmptyState(), update)


def make_optimizer(opt: Any, params: Any, total_steps: int
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """The optimiser described by the ``config.optimizer`` block (see configs/), and its
  learning-rate schedule."""
  schedule = make_schedule(opt.schedule, opt.learning_rate, total_steps, opt.warmup_fraction,
                           tuple(opt.get("decay_steps", ())), opt.get("decay_factor", 0.1))
  mask = decay_mask(params, opt.weight_decay_grouping)
  if opt.name == "adamw":
    core = [clip_by_global_norm(opt.clip_global_norm) if opt.clip_global_norm else
            optax.identity(),
            optax.scale_by_adam(opt.b1, opt.b2, opt.eps)]
  elif opt.name == "bert_adam":
    core = [clip_each_tensor(opt.clip_per_tensor_norm),
            scale_by_adam_without_bias_correction(opt.b1, opt.b2, opt.eps)]
  else:
    raise ValueError(f"optimizer.name={opt.name!r}: use 'adamw' or 'bert_adam'")
  multipliers = tree_by_regex(params, [tuple(p) for p in opt.lr_multipliers], 1.0)
  tx = optax.chain(*core, optax.add_decayed_weights(opt.weight_decay, mask),
                   optax.scale_by_learning_rate(schedule), scale_per_parameter(multipliers))
  if opt.frozen:
    labels = tree_by_regex(params, [(p, "frozen") for p in opt.frozen], "trained")
    tx = optax.multi_transform({"trained": tx, "frozen": optax.set_to_zero()}, labels)
  return tx, schedule
