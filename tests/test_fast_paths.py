"""The train-step speed-ups: the same dropout masks as flax, logits only at labelled
positions, bfloat16 matmul inputs."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vilbert_jax as vj
from vilbert_jax import losses as losses_lib
from vilbert_jax.model.layers import Dropout

B, T, R = 4, 12, 9


@pytest.mark.parametrize("shape,rate", [((3, 5, 7), 0.1), ((4, 12, 9, 9), 0.1), ((2, 3), 0.5)])
@pytest.mark.parametrize("key", [jax.random.key(3), jax.random.PRNGKey(5)])
def test_threefry_dropout_equals_flax_bit_for_bit(shape, rate, key):
  x = jnp.arange(np.prod(shape), dtype=jnp.float32).reshape(shape) + 1.0
  ours = Dropout(rate).apply({}, x, deterministic=False, rngs={"dropout": key})
  flax = nn.Dropout(rate).apply({}, x, deterministic=False, rngs={"dropout": key})
  np.testing.assert_array_equal(ours, flax)


@pytest.fixture(scope="module")
def tiny():
  cfg = vj.preset("tiny")
  rng = np.random.default_rng(0)
  inputs = (rng.integers(0, 100, (B, T)).astype(np.int32), np.zeros((B, T), np.int32),
            np.ones((B, T), np.int32), rng.random((B, R, 32)).astype(np.float32),
            rng.random((B, R, 5)).astype(np.float32), np.ones((B, R), np.int32))
  params = nn.unbox(vj.ViLBERTForPretraining(cfg).init(jax.random.key(0), *inputs)["params"])
  return cfg, inputs, params


def _labels(prob, seed=1):
  rng = np.random.default_rng(seed)
  lm = np.where(rng.random((B, T)) < prob, rng.integers(0, 100, (B, T)), -1).astype(np.int32)
  image_label = np.where(rng.random((B, R - 1)) < prob, 1, -1).astype(np.int32)
  target = rng.random((B, R - 1, 17)).astype(np.float32)
  return lm, image_label, target / target.sum(-1, keepdims=True), rng.integers(0, 2, B)


def _loss_and_grads(cfg, inputs, params, labels, gather):
  lm, image_label, target, alignment = labels

  def loss(params):
    extra = dict(masked_lm_labels=lm, image_label=image_label) if gather else {}
    out = vj.ViLBERTForPretraining(cfg).apply({"params": params}, *inputs, deterministic=False,
                                              rngs={"dropout": jax.random.key(2)}, **extra)
    losses = losses_lib.pretraining_losses(out, lm, image_label, target, alignment)
    correct = jnp.sum((jnp.argmax(out.mlm_logits, -1) == lm) & (lm >= 0))
    return losses["total"], (losses, correct)
  return jax.jit(jax.value_and_grad(loss, has_aux=True))(params)


@pytest.mark.parametrize("prob", [0.15, 0.9])  # 0.9: more than the gather capacity (fallback)
def test_logits_at_labelled_positions_leave_losses_and_gradients_unchanged(tiny, prob):
  cfg, inputs, params = tiny
  labels = _labels(prob)
  (_, (full, full_correct)), full_grads = _loss_and_grads(cfg, inputs, params, labels, False)
  (_, (gathered, correct)), grads = _loss_and_grads(cfg, inputs, params, labels, True)
  for k in full:
    np.testing.assert_allclose(gathered[k], full[k], rtol=1e-6, err_msg=k)
  assert int(correct) == int(full_correct)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
               grads, full_grads)


def test_bfloat16_matmul_inputs_stay_close_to_float32(tiny):
  cfg, inputs, params = tiny
  labels = _labels(0.15)
  (loss32, _), grads32 = _loss_and_grads(cfg, inputs, params, labels, True)
  (loss16, _), grads16 = _loss_and_grads(cfg.replace(matmul_dtype="bfloat16"), inputs, params,
                                         labels, True)
  np.testing.assert_allclose(loss16, loss32, rtol=2e-3)
  assert loss16 != loss32  # the option is in effect
  assert all(g.dtype == jnp.float32 for g in jax.tree.leaves(grads16))
  cos = lambda a, b: np.vdot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b))  # noqa: E731
  word = ("backbone", "text_embeddings", "word_embeddings", "embedding")
  g16, g32 = grads16, grads32
  for k in word:
    g16, g32 = g16[k], g32[k]
  assert cos(np.ravel(g16), np.ravel(g32)) > 0.999


def test_matmul_dtype_is_validated():
  with pytest.raises(ValueError, match="matmul_dtype"):
    vj.preset("tiny", dtype="bfloat16", matmul_dtype="bfloat16")
