"""The train step: gradients of a task's ``loss_fn``, accumulation, the optimiser update."""

from __future__ import annotations

from typing import Callable, Mapping

import jax
import jax.numpy as jnp
import optax

from vilbert_jax.train.state import TrainState

Batch = Mapping[str, jax.Array]


def make_train_step(loss_fn: Callable, tx: optax.GradientTransformation,
                    schedule: optax.Schedule, dropout_seed: int, grad_accum_steps: int = 1
                    ) -> Callable[[TrainState, Batch], tuple[TrainState, dict]]:
  """``train_step(state, batch) -> (state, metrics)``; jit it with donation.

  With ``grad_accum_steps = k`` the batch is split into k micro-batches whose gradients and
  metrics are averaged (each micro-batch averages its losses over its own masked positions).
  """
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def train_step(state: TrainState, batch: Batch):
    rng = jax.random.fold_in(jax.random.key(dropout_seed), state.step)
    if grad_accum_steps == 1:
      (_, metrics), grads = grad_fn(state.params, batch, rng)
    else:
      micro = jax.tree.map(
          lambda x: x.reshape(grad_accum_steps, x.shape[0] // grad_accum_steps, *x.shape[1:]),
          batch)

      def accumulate(carry, i):
        one = jax.tree.map(lambda x: x[i], micro)
        (_, m), g = grad_fn(state.params, one, jax.random.fold_in(rng, i))
        return jax.tree.map(jnp.add, carry, (g, m)), None
      (_, m_shape), g_shape = jax.eval_shape(
          grad_fn, state.params, jax.tree.map(lambda x: x[0], micro), rng)
      zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), (g_shape, m_shape))
      (grads, metrics), _ = jax.lax.scan(accumulate, zeros, jnp.arange(grad_accum_steps))
      grads, metrics = jax.tree.map(lambda x: x / grad_accum_steps, (grads, metrics))
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {**metrics, "grad_norm": optax.global_norm(grads),
               "learning_rate": schedule(state.step)}
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics
  return train_step
