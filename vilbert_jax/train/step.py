"""Pure functions at the seams: ``loss_fn`` and the jitted train and eval steps."""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import optax

from vilbert_jax import losses as losses_lib
from vilbert_jax.train.state import TrainState

Batch = Mapping[str, jax.Array]
MODEL_INPUTS = ("input_ids", "token_type_ids", "attention_mask", "image_feat", "image_loc",
                "image_mask")


def pretraining_metrics(out: Any, batch: Batch, masked_losses_on_mismatched: bool
                        ) -> dict[str, jax.Array]:
  """The three losses, their sum, masked-word and alignment accuracy (float32 scalars)."""
  losses = losses_lib.pretraining_losses(
      out, batch["masked_lm_labels"], batch["image_label"], batch["image_target"],
      batch["alignment_label"], masked_losses_on_mismatched=masked_losses_on_mismatched)
  labels = batch["masked_lm_labels"]
  masked = labels >= 0
  correct = (jnp.argmax(out.mlm_logits, -1) == labels) & masked
  metrics = {f"loss/{k}": v for k, v in losses.items()}
  metrics["masked_lm_accuracy"] = jnp.sum(correct) / jnp.maximum(jnp.sum(masked), 1)
  metrics["alignment_accuracy"] = jnp.mean(
      jnp.argmax(out.alignment_logits, -1) == batch["alignment_label"])
  return metrics


def make_loss_fn(model: Any, masked_losses_on_mismatched: bool = True) -> Callable:
  """``loss_fn(params, batch, rng) -> (total loss, metrics)``; rng None = deterministic."""
  def loss_fn(params, batch, rng):
    out = model.apply({"params": params}, *(batch[k] for k in MODEL_INPUTS),
                      deterministic=rng is None,
                      rngs=None if rng is None else {"dropout": rng})
    metrics = pretraining_metrics(out, batch, masked_losses_on_mismatched)
    return metrics["loss/total"], metrics
  return loss_fn


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


def make_eval_step(loss_fn: Callable) -> Callable[[Any, Batch], dict]:
  """``eval_step(params, batch) -> metrics`` without dropout."""
  return lambda params, batch: loss_fn(params, batch, None)[1]
