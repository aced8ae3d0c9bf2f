"""Optimisers and schedules: the paper's AdamW schedule and the original BertAdam."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from configs import common
from vilbert_jax.train import optim

PARAMS = {"layer": {"dense": {"kernel": jnp.ones((2, 3)), "bias": jnp.ones(3)},
                    "layer_norm": {"scale": jnp.ones(3), "bias": jnp.zeros(3)}},
          "head": {"kernel": jnp.ones((3, 1))}}


def test_warmup_linear_decay_schedule():
  schedule = optim.make_schedule("warmup_linear_decay", 1e-4, total_steps=100,
                                 warmup_fraction=0.1)
  np.testing.assert_allclose([schedule(s) for s in (0, 5, 10, 55, 100)],
                             [0.0, 5e-5, 1e-4, 5e-5, 0.0], atol=1e-12)


def test_warmup_constant_steps_schedule():
  schedule = optim.make_schedule("warmup_constant_steps", 1.0, total_steps=100,
                                 warmup_fraction=0.1, decay_steps=(50, 80), decay_factor=0.1)
  np.testing.assert_allclose([schedule(s) for s in (5, 10, 49, 50, 79, 80, 99)],
                             [0.5, 1.0, 1.0, 0.1, 0.1, 0.01, 0.01], rtol=1e-6)


def test_decay_masks_standard_and_original_inverted():
  standard = optim.decay_mask(PARAMS, "standard")
  inverted = optim.decay_mask(PARAMS, "original_inverted")
  assert standard["layer"]["dense"]["kernel"] and not standard["layer"]["dense"]["bias"]
  assert not standard["layer"]["layer_norm"]["scale"]
  assert jax.tree.map(lambda a, b: a != b, standard, inverted) == jax.tree.map(
      lambda _: True, standard)


def test_bert_adam_has_no_bias_correction_and_clips_each_tensor():
  tx = optax.chain(optim.clip_each_tensor(1.0),
                   optim.scale_by_adam_without_bias_correction(0.9, 0.999, 1e-6))
  grads = {"a": jnp.full((4,), 10.0), "b": jnp.full((1,), 0.5)}
  updates, _ = tx.update(grads, tx.init(grads))
  # Clipped to norm 1: a -> 0.5 each; first step m = 0.1 g, v = 0.001 g^2 (no correction).
  for key, g in (("a", 0.5), ("b", 0.5)):
    expected = 0.1 * g / (np.sqrt(0.001 * g * g) + 1e-6)
    np.testing.assert_allclose(updates[key], expected, rtol=1e-5)


def _opt(**overrides) -> ml_collections.ConfigDict:
  return common.optimizer_config(**overrides)


@pytest.mark.parametrize("name", ["adamw", "bert_adam"])
def test_frozen_and_zero_multiplier_parameters_never_change(name):
  opt = _opt(name=name, frozen=(r"^layer/layer_norm/",), lr_multipliers=((r"^head/", 0.0),),
             learning_rate=0.1)
  tx, _ = optim.make_optimizer(opt, PARAMS, total_steps=10)
  params, state = PARAMS, tx.init(PARAMS)
  for _ in range(3):
    grads = jax.tree.map(jnp.ones_like, params)
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
  np.testing.assert_array_equal(params["layer"]["layer_norm"]["scale"], 1.0)
  np.testing.assert_array_equal(params["head"]["kernel"], 1.0)
  assert np.all(params["layer"]["dense"]["kernel"] < 1.0)


def test_unknown_optimizer_and_schedule_are_refused():
  with pytest.raises(ValueError, match="optimizer.name='sgd'"):
    optim.make_optimizer(_opt(name="sgd"), PARAMS, 10)
  with pytest.raises(ValueError, match="schedule='cosine'"):
    optim.make_schedule("cosine", 1.0, 10)


@pytest.mark.parametrize("scale", [0.0, 0.1, 10.0])
def test_global_norm_clipping_equals_optax(scale):
  """Below the limit unchanged, above it scaled to norm 1, zero gradients stay zero."""
  rng = np.random.default_rng(0)
  grads = {"a": jnp.asarray(rng.normal(size=(7, 5)) * scale, jnp.float32),
           "b": jnp.asarray(rng.normal(size=(3,)) * scale, jnp.float32)}
  ours, _ = optim.clip_by_global_norm(1.0).update(grads, optax.EmptyState())
  reference, _ = optax.clip_by_global_norm(1.0).update(grads, optax.EmptyState())
  for key in grads:
    np.testing.assert_allclose(ours[key], reference[key], rtol=1e-6, atol=0)
  expected_norm = min(1.0, float(optax.global_norm(grads)))
  np.testing.assert_allclose(float(optax.global_norm(ours)), expected_norm, rtol=1e-6)
