"""12-in-1 task tokens: parity with the original per task id, config JSON, converter round trip,
the full-size listing, and the places that read the text length (retrieval prefix, errors)."""

import json

import jax
import numpy as np
import pytest

import vilbert_jax as vj
from reference import FIXTURES, model_inputs, reference, relative_error, small_config
from vilbert_jax.config import NUM_TASK_TOKENS
from vilbert_jax.convert.mapping import (TASK_EMBEDDINGS_KEY, unused_coattention_keys,
                                         vilbert_rules)
from vilbert_jax.convert.original import TIED_DECODER_KEY, param_shapes
from vilbert_jax.eval.retrieval import score_all_pairs
from vilbert_jax.model.embeddings import text_attention_mask

NAME = "original_small_tasks_12in1_tokens"
# float32 port vs the original's float32 run (its own float32 noise is 1.2e-6): see the
# reference README, "How to compare".
TOL = 1e-5
# Original output -> (our TaskOutput field, our array in the original's shape).
HEADS = {
    "vil_prediction": ("vqa_logits", lambda x: x),
    "vil_prediction_gqa": ("gqa_logits", lambda x: x),
    "vil_logit": ("retrieval_score", lambda x: x[:, None]),
    "vil_tri_prediction": ("entailment_logits", lambda x: x),
    "vil_binary_prediction": ("pair_logits", lambda x: x),  # B = 4: the NLVR2 pair head.
    "vision_prediction": ("region_logits", lambda x: x),
    "vision_logit": ("grounding_logits", lambda x: x[..., None]),
    "linguisic_prediction": ("mlm_logits", lambda x: x),
    "linguisic_logit": ("text_token_logits", lambda x: x[..., None]),
    "text_sequence": ("text_sequence", lambda x: x),
}


def _error(got, want, name):
  """Relative error; the padded regions' -10000 of ``vision_logit`` left out of the scale."""
  if name == "vision_logit":
    real = want > -5000
    return relative_error(got[real], want[real])
  return relative_error(got, want)


@pytest.fixture(scope="module")
def released():
  """The converted reference model and a jitted forward returning heads and traces."""
  state = vj.convert.load_state_dict(FIXTURES / f"{NAME}.npz")
  model = vj.convert.model_for_state_dict(state, small_config())
  params = vj.convert.original_to_flax(state, small_config())

  @jax.jit
  def forward(task_ids):
    def run(m, *inputs):
      out = m(*inputs, task_ids=task_ids)
      backbone = m.backbone(*inputs, task_ids=task_ids)
      return out, backbone.text_sequence
    (out, text), state = model.apply({"params": params}, *model_inputs(reference(NAME)),
                                     method=run, mutable=["intermediates"])
    return out, text, state["intermediates"]["backbone"]["embedded_text"][0]

  return state, model, params, forward


@pytest.mark.parametrize("run", ["in", "in_alt"])
def test_every_head_and_the_text_stream_match_the_original_per_task_id(released, run):
  """Both id assignments of the reference (1, 4, 15, 19 and 4, 15, 19, 1) on the same inputs;
  the outputs differ between them by 1.3-62 %, so a misplaced token cannot pass."""
  ref = reference(NAME)
  _, model, _, forward = released
  assert model.cfg.task_specific_tokens and model.head_variant == "12in1"
  out, text, embedded = forward(ref[f"{run}/task_ids"])
  outputs = "out" if run == "in" else "out_alt"
  for original, (ours, to_original) in HEADS.items():
    got = to_original(np.asarray(text if ours == "text_sequence" else getattr(out, ours)))
    want = ref[f"{outputs}/{original}"]
    assert got.shape == want.shape, original
    assert _error(got, want, original) <= TOL, original
  if run == "in":  # The traces of the first run: embeddings, alignment logits.
    assert relative_error(embedded, ref["trace/text_embeddings"]) <= TOL
    assert relative_error(out.alignment_logits, ref["trace/seq_relationship_score"]) <= TOL


def test_other_task_ids_give_other_outputs(released):
  """The reference's two runs are far apart, and so are ours: the ids reach every head."""
  ref = reference(NAME)
  out, text, _ = released[3](ref["in_alt/task_ids"])
  for original, (ours, to_original) in HEADS.items():
    got = to_original(np.asarray(text if ours == "text_sequence" else getattr(out, ours)))
    assert _error(got, ref[f"out/{original}"], original) > 1e-2, original


def test_encoder_text_mask_gains_a_leading_one():
  ref = reference(NAME)
  mask = text_attention_mask(small_config(task_specific_tokens=True), ref["in/attention_mask"])
  np.testing.assert_array_equal(mask, ref["trace/encoder_text_mask"])
  assert text_attention_mask(small_config(), ref["in/attention_mask"]) is ref[
      "in/attention_mask"]


def test_task_token_json_round_trips():
  raw = json.loads(str(reference(NAME)["meta/config_json"]))
  cfg = vj.ViLBERTConfig.from_original_json(raw)
  assert cfg == small_config(task_specific_tokens=True)
  assert cfg.to_original_json()["task_specific_tokens"] is True
  assert vj.ViLBERTConfig.from_original_json(cfg.to_original_json()) == cfg
  assert "task_specific_tokens" not in small_config().to_original_json()
  with pytest.raises(ValueError, match="task_specific_tokens.*single_stream"):
    vj.preset("single_stream", task_specific_tokens=True)


def test_converter_round_trip_with_the_table_is_exact(released):
  state, _, params, _ = released
  assert params["backbone"]["text_embeddings"]["task_embeddings"]["embedding"].shape == (
      NUM_TASK_TOKENS, 64)
  # The JSON config without the flag: the checkpoint's table turns it on, both ways.
  cfg = small_config()
  exported = vj.convert.flax_to_original(params, cfg,
                                         unused=vj.convert.unused_tensors(state, cfg))
  assert set(exported) == set(state)
  for key, value in state.items():
    np.testing.assert_array_equal(exported[key], value, err_msg=key)
  jax.tree.map(np.testing.assert_array_equal, vj.convert.original_to_flax(exported, cfg),
               params)


def test_checkpoint_without_the_table_loads_into_a_model_without_the_flag():
  state = vj.convert.load_state_dict(FIXTURES / "original_small_tasks_12in1.npz")
  model = vj.convert.model_for_state_dict(state, small_config())
  assert not model.cfg.task_specific_tokens
  params = vj.convert.original_to_flax(state, small_config())
  assert "task_embeddings" not in params["backbone"]["text_embeddings"]
  # A config that asks for task tokens needs the table.
  with pytest.raises(ValueError, match=f"missing keys: {TASK_EMBEDDINGS_KEY}"):
    vj.convert.original_to_flax(state, small_config(task_specific_tokens=True))


def test_full_size_listing_with_the_table_matches_every_key_and_shape():
  """``state_dict_vltasks_12in1_tokens_6layer.txt`` (the released 12-in-1 multi-task model's
  keys) against the shapes of our full-size model (eval_shape: nothing allocated)."""
  listing = {}
  for line in (FIXTURES / "state_dict_vltasks_12in1_tokens_6layer.txt").read_text().splitlines():
    if line and not line.startswith("#"):
      key, shape, _ = line.split("\t")
      listing[key] = tuple(json.loads(shape.replace("(", "[").replace(",)", "]")
                                      .replace(")", "]")))
  assert listing[TASK_EMBEDDINGS_KEY] == (NUM_TASK_TOKENS, 768) and len(listing) == 560
  state = {k: np.zeros((), np.float32) for k in listing}  # keys decide the model, not values
  state["vil_prediction.logit_fc.3.weight"] = np.zeros(listing["vil_prediction.logit_fc.3.weight"])
  state["vil_prediction_gqa.logit_fc.3.weight"] = np.zeros(
      listing["vil_prediction_gqa.logit_fc.3.weight"])
  model = vj.convert.model_for_state_dict(state, vj.preset("base"))
  assert model.cfg.task_specific_tokens
  shapes = param_shapes(model)
  rules = vilbert_rules(model.cfg, model.head_variant)
  ours = {r.key: shapes[r.flax_path].shape[::-1] if r.transpose else shapes[r.flax_path].shape
          for r in rules}
  assert set(listing) == set(ours) | set(unused_coattention_keys(model.cfg)) | {TIED_DECODER_KEY}
  assert {k: listing[k] for k in ours} == ours


def test_task_ids_are_required_exactly_when_the_model_has_the_table(released):
  _, model, params, _ = released
  inputs = model_inputs(reference(NAME))
  with pytest.raises(ValueError, match="pass task_ids"):
    model.apply({"params": params}, *inputs)
  with pytest.raises(ValueError, match=r"task_ids has shape \(2,\)"):
    model.apply({"params": params}, *inputs, task_ids=np.array([1, 4]))
  plain = vj.ViLBERTForVLTasks(small_config(), "12in1")
  with pytest.raises(ValueError, match="no task tokens"):
    plain.init(jax.random.key(0), *inputs, task_ids=np.ones(4, np.int32))
  with pytest.raises(ValueError, match="pretraining model has no task tokens"):
    vj.ViLBERTForPretraining(small_config(task_specific_tokens=True)).init(
        jax.random.key(0), *inputs)


def test_retrieval_scoring_from_the_text_prefix_keeps_the_task_token(released):
  """The scorer encodes each caption once (T+1 positions) and pairs it with every image: the
  same scores as running the whole model on each pair with the task's id."""
  _, model, params, _ = released
  ref = reference(NAME)
  captions = {k: ref[f"in/{k}"] for k in ("input_ids", "token_type_ids", "attention_mask")}
  images = {"image_feat": ref["in/image_feat"], "image_loc": ref["in/image_loc"],
            "image_mask": ref["in/image_attention_mask"]}
  got = score_all_pairs(model, params, captions, images, lambda out: out.retrieval_score,
                        caption_block=2, image_block=3, task_id=8)
  pairs = [np.repeat(v, 4, 0) for v in captions.values()] + [
      np.tile(v, (4,) + (1,) * (v.ndim - 1)) for v in images.values()]
  want = jax.jit(lambda p, *a: model.apply({"params": p}, *a, task_ids=np.full(16, 8)))(
      params, *pairs).retrieval_score.reshape(4, 4)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
