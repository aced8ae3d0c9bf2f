"""Model behaviour beyond parity: schedules, dtypes, remat, sharding, attention maps, losses."""

import functools

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vilbert_jax as vj
from reference import model_inputs, reference, relative_error, small_config
from vilbert_jax import sharding
from vilbert_jax.train import benchmark

B, T, R = 4, 10, 7


def _batch(cfg, seed=0):
  rng = np.random.default_rng(seed)
  ids = rng.integers(1, cfg.vocab_size, (B, T)).astype(np.int32)
  text_mask = np.ones((B, T), np.int32)
  text_mask[1, 6:] = 0
  image_mask = np.ones((B, R), np.int32)
  image_mask[2, 4:] = 0
  feat = np.abs(rng.normal(size=(B, R, cfg.v_feature_size))).astype(np.float32)
  loc = rng.uniform(size=(B, R, 5)).astype(np.float32)
  return ids, np.zeros_like(ids), text_mask, feat, loc, image_mask


def _init(model, cfg, seed=0):
  return flax.core.meta.unbox(model.init(jax.random.key(seed), *_batch(cfg)))["params"]


@functools.lru_cache(maxsize=None)
def _reference_params(**overrides):
  cfg = small_config(**dict(overrides))
  return cfg, vj.convert.original_to_flax(
      vj.convert.load_state_dict("tests/fixtures/original_small.npz"), cfg)


@pytest.mark.parametrize("v_ids,t_ids", [
    ((2, 2), (4, 4)),  # both streams end on co-attention, back to back
    ((0,), (1,)),  # several TRM layers after the only co-attention layer
    ((1, 2), (0, 3)),  # visual layers before the first co-attention, text ends on one
])
def test_any_valid_schedule_runs_and_is_followed(v_ids, t_ids):
  cfg = vj.preset("tiny", v_biattention_id=v_ids, t_biattention_id=t_ids)
  model = vj.ViLBERTForPretraining(cfg)
  params = _init(model, cfg)
  out, state = model.apply({"params": params}, *_batch(cfg), mutable=["intermediates"])
  assert out.text_sequence.shape == (B, T, cfg.hidden_size)
  assert out.image_sequence.shape == (B, R, cfg.v_hidden_size)
  order = [p[-1] for p in flax.traverse_util.flatten_dict(state["intermediates"])
           if p[1] == "encoder"]
  expected = [f"{k}_layer_{i}" for k, i in vj.model.schedule(cfg)]
  # The streams are independent between co-attention layers, so only each stream's own
  # order relative to the co-attention layers is fixed.
  for other in ("visual", "text"):
    view = lambda names: [n for n in names if not n.startswith(other)]  # noqa: E731
    assert view(order) == view(expected)
  assert sum(name.startswith("coattention") for name in order) == len(v_ids)
  assert np.isfinite(np.asarray(out.mlm_logits)).all()


def test_text_prefix_can_be_computed_once_and_reused():
  cfg, params = _reference_params()
  ref = reference()
  ids, types, mask, feat, loc, image_mask = model_inputs(ref)
  model = vj.ViLBERTModel(cfg)
  p = {"params": params["backbone"]}
  full = model.apply(p, ids, types, mask, feat, loc, image_mask)
  prefix = model.apply(p, ids, types, mask, method=vj.ViLBERTModel.text_prefix)
  reused = model.apply(p, ids, types, mask, feat, loc, image_mask, text_hidden=prefix)
  np.testing.assert_allclose(reused.pooled, full.pooled, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(reused.text_sequence, full.text_sequence, rtol=1e-6, atol=1e-6)


def test_padding_does_not_change_real_positions():
  cfg, params = _reference_params()
  model = vj.ViLBERTForPretraining(cfg)
  ids, types, mask, feat, loc, image_mask = _batch(cfg)
  out = model.apply({"params": params}, ids, types, mask, feat, loc, image_mask)
  ids2, feat2 = ids.copy(), feat.copy()
  ids2[1, 6:] = 3  # padded text tokens of example 1
  feat2[2, 4:] = 9.0  # padded regions of example 2
  out2 = model.apply({"params": params}, ids2, types, mask, feat2, loc, image_mask)
  np.testing.assert_allclose(out2.text_sequence[1, :6], out.text_sequence[1, :6], atol=1e-5)
  np.testing.assert_allclose(out2.image_sequence[2, :4], out.image_sequence[2, :4], atol=1e-5)
  np.testing.assert_allclose(out2.alignment_logits, out.alignment_logits, atol=1e-5)


def test_attention_maps_of_every_layer_are_returned():
  cfg, params = _reference_params()
  out, state = vj.ViLBERTForPretraining(cfg).apply(
      {"params": params}, *model_inputs(reference()), mutable=[vj.ATTENTION_MAPS])
  maps = {"/".join(k[:-1]): v[0] for k, v in
          flax.traverse_util.flatten_dict(state[vj.ATTENTION_MAPS]).items()}
  text_self = maps["backbone/encoder/text_layers_0/attention/core"]
  assert text_self.shape == (3, 4, 12, 12)  # [batch, heads, queries, keys]
  np.testing.assert_allclose(np.sum(text_self, -1), 1.0, rtol=1e-5)
  t2i = maps["backbone/encoder/coattention_layers_0/text_to_image"]
  i2t = maps["backbone/encoder/coattention_layers_0/image_to_text"]
  assert t2i.shape == (3, 4, 12, 7) and i2t.shape == (3, 4, 7, 12)
  image_mask = reference()["in/image_attention_mask"]
  assert np.all(np.asarray(t2i)[image_mask[:, None, None, :].repeat(4, 1).repeat(12, 2) == 0]
                < 1e-6)  # masked regions receive no attention
  assert len(maps) == 4 + 2 + 2 * 2  # 4 text, 2 visual self-attention, 2 x 2 co-attention
  assert relative_error(out.alignment_logits, reference()["out64/seq_relationship_score"]) < 1e-5


def test_bfloat16_compute_stays_close_to_float32():
  cfg, params = _reference_params()
  ref = reference()
  bf16 = vj.ViLBERTForPretraining(cfg.replace(dtype="bfloat16"))
  out = bf16.apply({"params": params}, *model_inputs(ref))
  assert out.text_sequence.dtype == jnp.float32  # LayerNorm outputs stay float32.
  for ours, original in (("text_sequence", "sequence_output_t"),
                         ("image_sequence", "sequence_output_v"),
                         ("mlm_logits", "prediction_scores_t"),
                         ("alignment_logits", "seq_relationship_score")):
    assert relative_error(getattr(out, ours), ref[f"out64/{original}"]) < 3e-2, ours
  bf16_params = jax.tree.map(lambda x: x.astype(jnp.bfloat16), params)
  both = vj.ViLBERTForPretraining(cfg.replace(dtype="bfloat16", param_dtype="bfloat16"))
  out = both.apply({"params": bf16_params}, *model_inputs(ref))
  assert relative_error(out.mlm_logits, ref["out64/prediction_scores_t"]) < 5e-2


def _loss_and_grads(cfg, params, batch, labels):
  model = vj.ViLBERTForPretraining(cfg)

  def loss_fn(p):
    out = model.apply({"params": p}, *batch, deterministic=False,
                      rngs={"dropout": jax.random.key(3)})
    return vj.losses.pretraining_losses(out, *labels)["total"]
  return jax.jit(jax.value_and_grad(loss_fn))(params)


def test_remat_gives_the_same_loss_and_gradients_with_dropout():
  cfg, params = _reference_params()
  ref = reference()
  labels = (ref["in/masked_lm_labels"], ref["in/image_label"], ref["in/image_target"],
            ref["in/next_sentence_label"])
  loss, grads = _loss_and_grads(cfg, params, model_inputs(ref), labels)
  loss_r, grads_r = _loss_and_grads(cfg.replace(remat=True), params, model_inputs(ref), labels)
  assert float(loss) == pytest.approx(float(loss_r), rel=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
               grads, grads_r)
  eval_loss = vj.losses.pretraining_losses(
      vj.ViLBERTForPretraining(cfg).apply({"params": params}, *model_inputs(ref)), *labels)
  assert float(loss) != pytest.approx(float(eval_loss["total"]))  # dropout was active


def test_remat_cuts_the_activations_kept_for_the_backward_pass():
  cfg, params = _reference_params()
  ref = reference()
  labels = (ref["in/masked_lm_labels"], ref["in/image_label"], ref["in/image_target"],
            ref["in/next_sentence_label"])

  def saved(c):
    def loss_fn(p, batch, rng):
      out = vj.ViLBERTForPretraining(c).apply({"params": p}, *batch, deterministic=False,
                                              rngs={"dropout": rng})
      return vj.losses.pretraining_losses(out, *labels)["total"], {}
    return benchmark.saved_activation_bytes(loss_fn, params, tuple(model_inputs(ref)))
  full, remat = saved(cfg), saved(cfg.replace(remat=True))
  assert 0 < remat < full / 2, (remat, full)


def test_activations_stay_split_over_batch_under_the_rules():
  mesh = sharding.make_mesh(data=2, fsdp=4, tensor=1)
  x = jnp.ones((8, 3, 4))
  assert sharding.constrain_activations(x) is x  # no rules: a no-op
  with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.DEFAULT_RULES):
    y = jax.jit(lambda a: sharding.constrain_activations(a * 2))(x)
  split = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(("data", "fsdp")))
  assert y.sharding.is_equivalent_to(split, x.ndim), y.sharding


def _spec(spec) -> tuple:
  """A PartitionSpec as a tuple without trailing Nones (they mean the same)."""
  axes = tuple(spec)
  while axes and axes[-1] is None:
    axes = axes[:-1]
  return axes


def test_init_on_8_device_mesh_places_params_per_axis_rules():
  assert jax.device_count() == 8
  cfg = vj.preset("tiny")
  model = vj.ViLBERTForPretraining(cfg)
  mesh = sharding.make_mesh(data=4, fsdp=1, tensor=2)
  variables, shardings = sharding.init_sharded(
      model.init, mesh, sharding.DEFAULT_RULES, jax.random.key(0), *_batch(cfg))
  params = variables["params"]
  layer = params["backbone"]["encoder"]["text_layers_0"]
  kernel = layer["ffn"]["intermediate"]["kernel"]  # [text_embed, text_mlp]
  assert kernel.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor")
  assert kernel.addressable_shards[0].data.shape == (64, 64)  # mlp 128 split over tensor=2
  q = params["backbone"]["encoder"]["coattention_layers_1"]["visual_qkv"]["query"]["kernel"]
  assert q.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor")
  assert q.addressable_shards[0].data.shape == (48, 16)
  emb = params["backbone"]["text_embeddings"]["word_embeddings"]["embedding"]
  assert emb.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp")
  # Every parameter is created with logical axis names and placed as the rules map them.
  boxed = jax.tree.leaves(jax.eval_shape(model.init, jax.random.key(0), *_batch(cfg))["params"],
                          is_leaf=lambda x: isinstance(x, nn.Partitioned))
  assert all(isinstance(x, nn.Partitioned) for x in boxed)
  expected = [_spec(nn.logical_to_mesh_axes(x.names, sharding.DEFAULT_RULES)) for x in boxed]
  assert [_spec(x.sharding.spec) for x in jax.tree.leaves(params)] == expected
  assert [_spec(s.spec) for s in jax.tree.leaves(shardings["params"])] == expected
  # The sharded model computes what the unsharded one does.
  plain = model.apply({"params": jax.device_get(params)}, *_batch(cfg))
  with jax.set_mesh(mesh):
    sharded = jax.jit(model.apply)({"params": params}, *_batch(cfg))
  np.testing.assert_allclose(sharded.mlm_logits, plain.mlm_logits, rtol=1e-5, atol=1e-5)


def test_single_stream_baseline_has_the_same_heads():
  cfg = vj.preset("tiny", single_stream=True)
  model = vj.ViLBERTForPretraining(cfg)
  params = _init(model, cfg)
  assert set(params) == {"backbone", "masked_lm_head", "region_head", "alignment_head"}
  assert "token_type_embeddings" in params["backbone"]["image_embeddings"]
  out = model.apply({"params": params}, *_batch(cfg))
  assert out.mlm_logits.shape == (B, T, cfg.vocab_size)
  assert out.region_logits.shape == (B, R, cfg.v_target_size)
  assert out.alignment_logits.shape == (B, 2)
  assert out.text_pooled.shape == (B, cfg.hidden_size)
  np.testing.assert_array_equal(out.pooled, out.text_pooled)
  tasks = vj.ViLBERTForVLTasks(cfg, "neurips", num_answers=5)
  task_out = tasks.apply({"params": _init(tasks, cfg)}, *_batch(cfg))
  assert task_out.vqa_logits.shape == (B, 5) and task_out.grounding_logits.shape == (B, R)


def test_masked_region_loss_is_zero_not_nan_without_masked_regions():
  ref = reference()
  cfg, params = _reference_params()
  out = vj.ViLBERTForPretraining(cfg).apply({"params": params}, *model_inputs(ref))
  no_mask = -np.ones_like(ref["in/image_label"])
  no_words = -np.ones_like(ref["in/masked_lm_labels"])
  losses = vj.losses.pretraining_losses(out, no_words, no_mask, ref["in/image_target"],
                                        ref["in/next_sentence_label"])
  assert float(losses["masked_region"]) == 0.0 and float(losses["masked_lm"]) == 0.0
  assert float(losses["total"]) == pytest.approx(float(losses["alignment"]))


def test_masked_losses_can_skip_mismatched_pairs():
  ref = reference()
  cfg, params = _reference_params()
  out = vj.ViLBERTForPretraining(cfg).apply({"params": params}, *model_inputs(ref))
  labels = (ref["in/masked_lm_labels"], ref["in/image_label"], ref["in/image_target"])
  all_mismatched = np.ones(3, np.int64)
  skipped = vj.losses.pretraining_losses(out, *labels, all_mismatched,
                                         masked_losses_on_mismatched=False)
  kept = vj.losses.pretraining_losses(out, *labels, all_mismatched)
  assert float(skipped["masked_lm"]) == 0.0 and float(skipped["masked_region"]) == 0.0
  assert float(kept["masked_lm"]) > 0 and float(kept["masked_region"]) > 0
  np.testing.assert_allclose(skipped["alignment"], kept["alignment"])


def test_wrong_feature_width_is_a_clear_error():
  cfg, params = _reference_params()
  ids, types, mask, feat, loc, image_mask = _batch(cfg)
  with pytest.raises(ValueError, match="image_feat has width 31.*v_feature_size=32"):
    vj.ViLBERTForPretraining(cfg).apply({"params": params}, ids, types, mask, feat[..., :31],
                                        loc, image_mask)
  with pytest.raises(ValueError, match="exceeds max_position_embeddings=40"):
    vj.ViLBERTForPretraining(cfg).apply({"params": params}, np.ones((1, 41), np.int32),
                                        None, None, feat[:1], loc[:1])
