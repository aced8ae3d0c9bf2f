"""FSDP x tensor parallelism on the 8-device CPU mesh: parameters really split, same losses
and parameters as one device (tiny model, two train steps)."""

import jax
import numpy as np

from train_utils import tiny_config
from vilbert_jax.train import benchmark, trainer
from vilbert_jax.train import data as train_data

FFN_KERNEL = ("backbone", "encoder", "text_layers_0", "ffn", "intermediate", "kernel")


def _train(config, devices, steps=2):
  """Losses of ``steps`` steps on one fixed batch, the final params and the FFN kernel."""
  run = trainer.setup(config, num_examples=64, devices=devices)
  batch = train_data.to_global(
      benchmark.synthetic_batch(run.cfg, config.batch_size, config.data.max_text_len,
                                config.data.num_visual_tokens), run.mesh)
  step = run.jit_train_step(donate=False)
  state, losses = run.state, []
  with jax.set_mesh(run.mesh):
    for _ in range(steps):
      state, metrics = step(state, batch)
      losses.append(float(metrics["loss/total"]))
  kernel = state.params
  for key in FFN_KERNEL:
    kernel = kernel[key]
  return losses, jax.device_get(state.params), kernel


def test_fsdp_and_tensor_rules_match_one_device(tmp_path):
  one_losses, one_params, _ = _train(tiny_config(tmp_path), jax.devices()[:1])
  config = tiny_config(tmp_path)
  config.mesh.update(fsdp=4, tensor=2)
  losses, params, kernel = _train(config, None)
  # The FFN kernel [text_embed, text_mlp] is split over fsdp (rows) and tensor (columns).
  rows, cols = kernel.shape
  assert kernel.sharding.shard_shape(kernel.shape) == (rows // 4, cols // 2)
  np.testing.assert_allclose(losses, one_losses, rtol=2e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
               params, one_params)
