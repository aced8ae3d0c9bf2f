"""ViLBERT inside your own Flax module: converted weights, a new head, a few optax steps.

    vilbert-convert original --checkpoint pytorch_model_9.bin \
        --config bert_base_6layer_6conect.json --output /ckpt/vilbert_base
    python examples/custom_head.py --params /ckpt/vilbert_base
"""
import argparse

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import vilbert_jax as vj
from vilbert_jax.params_io import load_params


class ImageTextClassifier(nn.Module):
  """The pretrained backbone plus a new head on the joint pooled vector."""
  cfg: vj.ViLBERTConfig
  num_classes: int

  @nn.compact
  def __call__(self, input_ids, image_feat, image_loc, image_mask, *, deterministic=True):
    out = vj.ViLBERTModel(self.cfg, name="backbone")(
        input_ids, None, (input_ids > 0).astype(jnp.int32), image_feat, image_loc, image_mask,
        deterministic=deterministic)
    return nn.Dense(self.num_classes, name="head")(out.pooled)  # [B, num_classes]


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--params", required=True, help="a directory from vilbert-convert")
  parser.add_argument("--steps", type=int, default=5)
  args = parser.parse_args()

  pretrained, spec = load_params(args.params)  # the pretraining model's params and config
  cfg = spec.config
  model = ImageTextClassifier(cfg, num_classes=3)

  rng = np.random.default_rng(0)  # a toy batch: 8 captions x 10 regions (IMG slot first)
  batch = {"input_ids": rng.integers(5, cfg.vocab_size, (8, 12)).astype(np.int32),
           "image_feat": rng.normal(size=(8, 10, cfg.v_feature_size)).astype(np.float32),
           "image_loc": rng.uniform(size=(8, 10, 5)).astype(np.float32),
           "image_mask": np.ones((8, 10), np.int32)}
  labels = rng.integers(0, 3, 8)

  params = jax.jit(model.init)(jax.random.key(0), **batch)["params"]
  params["backbone"] = pretrained["backbone"]  # converted weights; the head stays fresh
  optimizer = optax.adamw(1e-3)
  opt_state = optimizer.init(params)

  @jax.jit
  def step(params, opt_state, dropout_key):
    def loss_fn(p):
      logits = model.apply({"params": p}, **batch, deterministic=False,
                           rngs={"dropout": dropout_key})
      return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  for i in range(args.steps):
    params, opt_state, loss = step(params, opt_state, jax.random.key(i))
    print(f"step {i} loss {float(loss):.4f}")


if __name__ == "__main__":
  main()
