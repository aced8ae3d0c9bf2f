"""Numerical equivalence with the original PyTorch ViLBERT (reference numbers in fixtures/)."""

import flax
import jax
import numpy as np
import pytest

import vilbert_jax as vj
from reference import model_inputs, reference, relative_error, small_config

TOL = 1e-5  # Relative to each array's max magnitude; float32 port vs float64 reference.

OUTPUTS = {
    "sequence_output_t": "text_sequence",
    "sequence_output_v": "image_sequence",
    "pooled_output_t": "text_pooled",
    "pooled_output_v": "image_pooled",
    "prediction_scores_t": "mlm_logits",
    "prediction_scores_v": "region_logits",
    "seq_relationship_score": "alignment_logits",
}


def _trace_name(original: str) -> tuple[str, ...]:
  """Reference trace name -> path in our ``intermediates`` collection."""
  kind, _, i = original.rpartition("_")
  if original == "t_embeddings":
    return ("backbone", "embedded_text")
  if original == "v_embeddings":
    return ("backbone", "embedded_image")
  return ("backbone", "encoder", {"t_layer": "text_layer", "v_layer": "visual_layer",
                                  "c_layer": "coattention_layer"}[kind] + f"_{i}")


@pytest.fixture(scope="module", params=["auto", "explicit"])
def pretraining_run(request):
  ref = reference("original_small")
  cfg = small_config(attention_impl=request.param)
  params = vj.convert.original_to_flax(vj.convert.load_state_dict(
      "tests/fixtures/original_small.npz"), cfg)
  out, state = vj.ViLBERTForPretraining(cfg).apply(
      {"params": params}, *model_inputs(ref), deterministic=True, mutable=["intermediates"])
  return ref, out, state["intermediates"]


@pytest.mark.parametrize("original,ours", OUTPUTS.items())
def test_outputs_match_original(pretraining_run, original, ours):
  ref, out, _ = pretraining_run
  got = getattr(out, ours)
  assert got.shape == ref[f"out64/{original}"].shape
  assert relative_error(got, ref[f"out64/{original}"]) <= TOL


def test_every_block_trace_matches_in_execution_order(pretraining_run):
  ref, _, intermediates = pretraining_run
  flat = flax.traverse_util.flatten_dict(intermediates)
  order = [str(n) for n in ref["meta/exec_order"]]
  encoder_order = [p[-1] for p in flat if p[1] == "encoder"]
  assert encoder_order == [_trace_name(n)[-1] for n in order if "embeddings" not in n]
  for name in order:
    (value,) = flat[_trace_name(name)]
    if name.startswith("c_layer"):
      text, image = value
      assert relative_error(text, ref[f"trace/{name}/t"]) <= TOL, name
      assert relative_error(image, ref[f"trace/{name}/v"]) <= TOL, name
    else:
      assert relative_error(value, ref[f"trace/{name}"]) <= TOL, name


def test_losses_match_original(pretraining_run):
  ref, out, _ = pretraining_run
  losses = vj.losses.pretraining_losses(out, ref["in/masked_lm_labels"], ref["in/image_label"],
                                        ref["in/image_target"], ref["in/next_sentence_label"])
  expected = {"masked_lm": "masked_lm_loss", "masked_region": "masked_img_loss",
              "alignment": "next_sentence_loss"}
  for ours, original in expected.items():
    assert abs(float(losses[ours]) - ref[f"loss64/{original}"]) <= TOL * abs(
        ref[f"loss64/{original}"]), ours
  assert float(losses["total"]) == pytest.approx(sum(float(losses[k]) for k in expected))


TASK_OUTPUTS = {
    "vil_prediction": ("vqa_logits", lambda x: x),
    "vil_logit": ("retrieval_score", lambda x: x[:, None]),
    "vil_binary_prediction": ("alignment_logits", lambda x: x),
    "vision_prediction": ("region_logits", lambda x: x),
    "vision_logit": ("grounding_logits", lambda x: x[..., None]),
    "linguisic_prediction": ("mlm_logits", lambda x: x),
    "linguisic_logit": ("text_token_logits", lambda x: x[..., None]),
}
TASK_OUTPUTS_12IN1 = {
    **TASK_OUTPUTS,
    "vil_prediction_gqa": ("gqa_logits", lambda x: x),
    "vil_tri_prediction": ("entailment_logits", lambda x: x),
}


@pytest.mark.parametrize("name,outputs", [("original_small_tasks", TASK_OUTPUTS),
                                          ("original_small_tasks_12in1", TASK_OUTPUTS_12IN1)])
def test_task_heads_match_original(name, outputs):
  ref = reference(name)
  cfg = small_config()
  state = vj.convert.load_state_dict(f"tests/fixtures/{name}.npz")
  model = vj.convert.model_for_state_dict(state, cfg)
  assert isinstance(model, vj.ViLBERTForVLTasks)
  assert model.head_variant == ("12in1" if "12in1" in name else "neurips")
  params = vj.convert.original_to_flax(state, cfg)
  out = model.apply({"params": params}, *model_inputs(ref), deterministic=True)
  for original, (ours, to_original_shape) in outputs.items():
    want = ref[f"out/{original}"]
    got = to_original_shape(np.asarray(getattr(out, ours)))
    assert got.shape == want.shape, original
    # The task references are float32 runs of the original: allow its own float32 noise.
    assert relative_error(got, want) <= 2e-5, original
  assert out.pair_logits is None  # batch of 3: the NLVR2 pair head does not apply.


def test_weight_norm_folds_to_the_reference_matrices():
  ref = reference("original_small_tasks")
  cfg = small_config()
  params = vj.convert.original_to_flax(
      vj.convert.load_state_dict("tests/fixtures/original_small_tasks.npz"), cfg)
  for layer, key in (("hidden", "main.0"), ("output", "main.3")):
    p = params["vqa_head"][layer]
    folded = p["scale"] * p["direction"] / np.linalg.norm(p["direction"])
    np.testing.assert_allclose(folded.T, ref[f"derived/vil_prediction.{key}.weight"],
                               rtol=1e-5, atol=1e-7)


def test_pair_head_on_even_batches_reads_concatenated_pairs():
  """12-in-1 NLVR2 head: pooled rows (2k, 2k+1) concatenated, then the GeLU classifier."""
  ref = reference("original_small_tasks_12in1")
  cfg = small_config()
  state = vj.convert.load_state_dict("tests/fixtures/original_small_tasks_12in1.npz")
  params = vj.convert.original_to_flax(state, cfg)
  model = vj.convert.model_for_state_dict(state, cfg)
  inputs = [x[:2] for x in model_inputs(ref)]
  out = model.apply({"params": params}, *inputs, deterministic=True)
  assert out.pair_logits.shape == (1, 2)
  p = params["pair_head"]
  x = np.asarray(out.pooled).reshape(1, -1) @ p["hidden"]["kernel"] + p["hidden"]["bias"]
  x = 0.5 * x * (1 + np.asarray(jax.scipy.special.erf(x / np.sqrt(2))))
  x = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-12)
  x = x * p["layer_norm"]["scale"] + p["layer_norm"]["bias"]
  want = x @ p["output"]["kernel"] + p["output"]["bias"]
  np.testing.assert_allclose(out.pair_logits, want, rtol=1e-4, atol=1e-5)
