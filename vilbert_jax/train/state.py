"""The training state and its creation, already sharded on the mesh."""

from __future__ import annotations

from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vilbert_jax import sharding


@flax.struct.dataclass
class TrainState:
  """Everything a step changes; the dropout key is derived from ``step``, so resuming from a
  checkpoint continues the very same computation."""

  step: jax.Array  # int32 scalar: optimiser steps taken.
  params: Any  # Flax params (unboxed).
  opt_state: Any  # Optax state.


def state_shardings(abstract_boxed_params: Any, abstract_state: TrainState,
                    tx: optax.GradientTransformation, mesh: Mesh,
                    rules: sharding.Rules) -> TrainState:
  """Shardings of a TrainState: params per the axis rules, optimiser moments like their
  params, everything else replicated."""
  params = sharding.param_shardings(abstract_boxed_params, mesh, rules)
  replicated = NamedSharding(mesh, PartitionSpec())
  # Frozen parameters (optax.multi_transform) hold a MaskedNode instead of moments.
  masked = lambda x: isinstance(x, optax.MaskedNode)  # noqa: E731
  opt_state = optax.tree_map_params(
      tx, lambda p, s: p if masked(p) else s, abstract_state.opt_state, params,
      transform_non_params=lambda _: replicated, is_leaf=masked)
  return TrainState(step=replicated, params=params, opt_state=opt_state)


def _init_and_shardings(init_params_fn: Callable[[jax.Array], Any],
                        tx: optax.GradientTransformation, rng: jax.Array, mesh: Mesh,
                        rules: sharding.Rules) -> tuple[Callable, TrainState, TrainState]:
  """``(init(rng) -> TrainState, its abstract value, its shardings)``."""
  abstract_boxed = jax.eval_shape(init_params_fn, rng)

  def init(rng):
    params = nn.unbox(init_params_fn(rng))
    return TrainState(step=jax.numpy.zeros((), jax.numpy.int32), params=params,
                      opt_state=tx.init(params))
  abstract = jax.eval_shape(init, rng)
  return init, abstract, state_shardings(abstract_boxed, abstract, tx, mesh, rules)


def create_train_state(init_params_fn: Callable[[jax.Array], Any],
                       tx: optax.GradientTransformation, rng: jax.Array, mesh: Mesh,
                       rules: sharding.Rules) -> tuple[TrainState, TrainState]:
  """Initialises params and optimiser state directly into their shardings.

  ``init_params_fn(rng)`` returns the model's (boxed) ``params`` collection.
  Returns ``(state, shardings)``.
  """
  init, _, shardings = _init_and_shardings(init_params_fn, tx, rng, mesh, rules)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    state = jax.jit(init, out_shardings=shardings)(rng)
  return state, shardings


def fresh_params(init_params_fn: Callable[[jax.Array], Any], rng: jax.Array, mesh: Mesh,
                 rules: sharding.Rules) -> Any:
  """The model's initial params alone (unboxed, host arrays), initialised into their
  shardings: the same values as ``create_train_state(init_params_fn, ..., rng, ...)``."""
  shardings = sharding.param_shardings(jax.eval_shape(init_params_fn, rng), mesh, rules)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    params = jax.jit(lambda r: nn.unbox(init_params_fn(r)), out_shardings=shardings)(rng)
  return jax.device_get(params)


def train_state_from_params(init_params_fn: Callable[[jax.Array], Any], params: Any,
                            tx: optax.GradientTransformation, rng: jax.Array, mesh: Mesh,
                            rules: sharding.Rules) -> tuple[TrainState, TrainState]:
  """Like ``create_train_state``, with ``params`` (host arrays, e.g. a checkpoint laid over
  ``fresh_params``) instead of freshly initialised ones. Returns ``(state, shardings)``."""
  _, _, shardings = _init_and_shardings(init_params_fn, tx, rng, mesh, rules)
  placed = jax.tree.map(jax.device_put, params, shardings.params)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    opt_state = jax.jit(tx.init, out_shardings=shardings.opt_state)(placed)
  return TrainState(step=jax.device_put(jax.numpy.zeros((), jax.numpy.int32), shardings.step),
                    params=placed, opt_state=opt_state), shardings


def abstract_train_state(init_params_fn: Callable[[jax.Array], Any],
                         tx: optax.GradientTransformation, rng: jax.Array, mesh: Mesh,
                         rules: sharding.Rules) -> tuple[TrainState, TrainState]:
  """Like ``create_train_state`` but allocates nothing: ``jax.ShapeDtypeStruct`` leaves that
  carry their shardings, for compiling ahead of time (``jit(...).lower(state, ...)``)."""
  _, abstract, shardings = _init_and_shardings(init_params_fn, tx, rng, mesh, rules)
  state = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                       abstract, shardings)
  return state, shardings


def with_params(state: TrainState, params: Any, shardings: TrainState) -> TrainState:
  """``state`` with ``params`` (host arrays, e.g. from a checkpoint) placed per ``shardings``."""
  placed = jax.tree.map(lambda x, s: jax.device_put(x, s), params, shardings.params)
  return state.replace(params=placed)
