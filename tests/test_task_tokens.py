"""12-in-1 task tokens: parity with the original per task id, config JSON, converter round trip,
the full-size listing, and the places that read the text length (retrieval prefix, errors)."""

import json
import pathlib
import re
import shlex

import jax
import numpy as np
import pytest

import vilbert_jax as vj
from reference import FIXTURES, model_inputs, reference, relative_error, small_config
from train_utils import launch, tiny_task_config
from vilbert_jax import tasks
from vilbert_jax.convert.__main__ import main as convert_main
from vilbert_jax.data.features import RegionFeatures
from vilbert_jax.data.pipeline import image_regions
from vilbert_jax.data.regions import visual_inputs
from vilbert_jax.model.inputs import MODEL_INPUTS
from vilbert_jax.params_io import load_spec
from vilbert_jax.predict import Predictor
from vilbert_jax.train.export import TASK_FILE
from vilbert_jax.train.initialization import overlay_params
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


# ----------------------------------------------------------------------------- tasks
class _RecordingModel:
  """Stands in for a task model: records the task ids each call receives."""

  def __init__(self, task_specific_tokens=True):
    self.cfg = small_config(task_specific_tokens=task_specific_tokens)
    self.calls = []

  def apply(self, variables, *inputs, **kwargs):
    self.calls.append(kwargs.get("task_ids"))
    return inputs[0].shape[0]


def _task(name, **task_config):
  config = tiny_task_config(name, "/nonexistent")
  config.task.update(task_config)
  return tasks.TASKS[name](config, {"answer_vocab": ["yes", "no"]})


def _batch(*options):
  """Model inputs of 2 examples with ``options`` text options each (none: plain ``[2, T]``)."""
  text = (2, *options, 5)
  return {"input_ids": np.ones(text, np.int32), "token_type_ids": np.zeros(text, np.int32),
          "attention_mask": np.ones(text, np.int32), "image_feat": np.zeros((2, 3, 32)),
          "image_loc": np.zeros((2, 3, 5)), "image_mask": np.ones((2, 3), np.int32)}


@pytest.mark.parametrize("name,options,want", [
    ("vqa", (), [1, 1]),
    ("refcoco_plus", (), [10, 10]),
    ("retrieval", (4,), [8] * 8),  # Flickr30k; 4 pairs per example, flattened.
    ("vcr", (8,), ([5] * 4 + [6] * 4) * 2),  # Q->A pairs, then QA->R pairs, per example.
])
def test_each_task_passes_its_original_id_per_flattened_pair(name, options, want):
  model = _RecordingModel()
  task = _task(name)
  assert task.forward(model, {}, _batch(*options), None) == len(want)
  np.testing.assert_array_equal(model.calls[-1], want)


def test_task_ids_come_from_the_config_or_the_batch():
  model = _RecordingModel()
  _task("retrieval", task_id=7).forward(model, {}, _batch(4), None)  # COCO retrieval
  np.testing.assert_array_equal(model.calls[-1], [7] * 8)
  _task("vcr", task_id=3, rationale_task_id=4).forward(model, {}, _batch(8), None)
  np.testing.assert_array_equal(model.calls[-1], ([3] * 4 + [4] * 4) * 2)
  batch = {**_batch(4), "task_ids": np.array([[1, 2, 3, 4], [5, 6, 7, 8]])}
  _task("retrieval").forward(model, {}, batch, None)
  np.testing.assert_array_equal(model.calls[-1], np.arange(1, 9))
  plain = _RecordingModel(task_specific_tokens=False)
  _task("vqa").forward(plain, {}, _batch(), None)
  assert plain.calls == [None]


def test_bad_or_missing_task_ids_are_named():
  with pytest.raises(ValueError, match="task_id=20 is not a task-token row"):
    _task("vqa", task_id=20).forward(_RecordingModel(), {}, _batch(), None)
  with pytest.raises(ValueError, match="rationale_task_id=25"):
    _task("vcr", rationale_task_id=25).forward(_RecordingModel(), {}, _batch(8), None)
  with pytest.raises(ValueError, match="'zeroshot_retrieval' has no 12-in-1 task id"):
    _task("zeroshot_retrieval").configured_task_id  # pylint: disable=expression-not-assigned


# ----------------------------------------------------------------------------- released model
@pytest.fixture(scope="module")
def converted(tmp_path_factory):
  """The reference checkpoint through the converter CLI, as the README converts the released
  multi-task model (``multi_task_model.bin`` -> ``/ckpt/12in1``)."""
  out = tmp_path_factory.mktemp("converted") / "12in1"
  assert convert_main(["original", "--checkpoint", str(FIXTURES / f"{NAME}.npz"),
                       "--config", str(FIXTURES / "original_small_config.json"),
                       "--output", str(out)]) == 0
  assert load_spec(out).config.task_specific_tokens
  return out


def test_predictor_reads_with_the_named_tasks_token(converted):
  """A hand-written ``task.json`` next to the converted params makes it a Predictor export."""
  (converted / TASK_FILE).write_text(json.dumps({
      "task": "refcoco_plus", "answer_vocab": None, "tokenizer": "synthetic",
      "max_text_len": 12, "num_visual_tokens": 7, "task_id": None}))
  rng = np.random.default_rng(0)
  boxes = np.sort(rng.uniform(0, 90, (5, 4)).astype(np.float32), axis=1)
  image = RegionFeatures("x", rng.normal(size=(5, 32)).astype(np.float32), boxes, 100, 100)
  own = Predictor.load(str(converted))
  assert own.task_id == 10  # refcoco_plus, from the task's own id
  as_vqa = Predictor.load(str(converted), task="vqa")
  assert as_vqa.task_id == 1 and as_vqa.task == "vqa"
  grounding, vqa_grounding = own.ground("a red cat", image), as_vqa.ground("a red cat", image)
  # The same scores as the model given task id 10 explicitly (padded regions: -inf).
  inputs = own.tokenizer.encode("a red cat", 12)
  region = image_regions({"features": image.features, "boxes": image.boxes, "cls_prob": None,
                          "image_w": 100, "image_h": 100}, 6)
  batch = {**{k: v[None] for k, v in inputs.items()},
           **{k: v[None] for k, v in visual_inputs(region, 7).items()}}
  compiled = own._apply  # pylint: disable=protected-access  (the predictor's jitted model)
  out = compiled(own.params, tuple(batch[k] for k in MODEL_INPUTS),
                 {"task_ids": np.array([10], np.int32)})
  want = np.where(batch["image_mask"][0] > 0, out.grounding_logits[0], -np.inf)
  np.testing.assert_allclose(grounding.scores, want, rtol=1e-6)
  assert np.abs(vqa_grounding.scores[:-1] - grounding.scores[:-1]).max() > 1e-2  # real regions
  with pytest.raises(ValueError, match="'zeroshot_retrieval' has no 12-in-1 task id"):
    Predictor.load(str(converted), task="zeroshot_retrieval")


def _readme_command(name: str) -> list[str]:
  """The arguments of the README's ``python launch.py`` command that contains ``name``."""
  readme = (pathlib.Path(__file__).parents[1] / "README.md").read_text()
  blocks = re.findall(r"```bash\n(.*?)```", readme, re.S)
  commands = [c for b in blocks for c in b.replace("\\\n", " ").splitlines()]
  (command,) = [c for c in commands if name in c and "launch.py" in c]
  args = shlex.split(command.split("#")[0])
  assert args[:2] == ["python", "launch.py"]
  return args[2:]


def test_readme_evaluates_the_multi_task_checkpoint_per_task(converted, tmp_path):
  """The README's per-task evaluation command, on the converted reference model and a tiny
  synthetic dataset (the real dataset's name, sizes and model width overridden after it)."""
  args = _readme_command("--config.model.task_specific_tokens=True")
  args = [a.replace("/ckpt/12in1", str(converted)).replace("/tmp/12in1_refcoco_plus",
                                                           str(tmp_path / "run"))
          for a in args]
  cfg = small_config()
  tiny = {"data.name": "vilbert_synthetic_scenes", "data.data_dir": str(tmp_path / "tfds"),
          "data.tokenizer": "synthetic", "data.eval_splits": '("validation",)',
          "data.synthetic.feature_dim": 32, "data.synthetic.num_train": 16,
          "data.synthetic.num_validation": 16, "data.synthetic.num_test": 16,
          "data.max_text_len": 12, "data.num_visual_tokens": 7, "data.worker_count": 0,
          "batch_size": 16, "eval.batch_size": 16,
          **{f"model.{k}": getattr(cfg, k) for k in cfg.to_original_json()
             if hasattr(cfg, k) and k not in ("task_specific_tokens",)}}
  process = launch(*args, *(f"--config.{k}={v}" for k, v in tiny.items()))
  output, _ = process.communicate(timeout=600)
  assert process.returncode == 0, output
  assert "kept 0 freshly initialised, ignored 0" in output, output
  metrics = json.loads((tmp_path / "run" / "eval_metrics.json").read_text())
  assert 0 <= metrics["validation/accuracy"] <= 1
  records = json.loads((tmp_path / "run" / "refcoco_plus_validation_predictions.json")
                       .read_text())
  assert sorted(r["example_id"] for r in records) == list(range(len(records))) and records


def test_a_checkpoint_with_task_tokens_is_refused_by_a_model_without_them():
  table = {"backbone": {"text_embeddings": {"task_embeddings": {"embedding": np.ones((20, 4))},
                                            "layer_norm": {"scale": np.ones(4)}}}}
  fresh = {"backbone": {"text_embeddings": {"layer_norm": {"scale": np.zeros(4)}}}}
  with pytest.raises(ValueError, match="set --config.model.task_specific_tokens=True"):
    overlay_params(fresh, table, "/ckpt/12in1")
  # The other way round (fine-tuning a pretrained model with task tokens): the table is fresh.
  _, report = overlay_params(table, fresh, "/ckpt/pretrained")
  assert report.fresh == ("backbone/text_embeddings/task_embeddings/embedding",)
