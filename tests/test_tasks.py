"""The transfer tasks: losses, metrics plumbing, fine-tuning, evaluation, released checkpoints,
prediction files and the predict API."""

import importlib
import json
import pathlib
import pickle
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vilbert_jax as vj
from reference import small_config
from configs import common
from train_utils import tiny_config, tiny_task_config
from vilbert_jax import metrics, tasks
from vilbert_jax.convert.__main__ import main as convert_main
from vilbert_jax.data.features import RegionFeatures
from vilbert_jax.data.tfds_io import ItemIndex
from vilbert_jax.eval.retrieval import score_all_pairs
from vilbert_jax.params_io import load_spec
from vilbert_jax.predict import Predictor
from vilbert_jax.tasks.base import flat_model_inputs
from vilbert_jax.tasks.evaluation import padded_batches
from vilbert_jax.tasks.refcoco_plus import RefCOCOPlus, grounding_loss
from vilbert_jax.tasks.vcr import answer_and_rationale_logits
from vilbert_jax.tasks.vqa import VQA, load_answer_vocab, vqa_loss
from vilbert_jax.train import data as train_data
from vilbert_jax.train import trainer

FINETUNED = ("vqa", "vcr", "refcoco_plus", "retrieval")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("tfds")


def _metrics(workdir, split):
  lines = (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()
  return [m for m in map(json.loads, lines) if m["split"] == split]


# ----------------------------------------------------------------------------- losses
def test_vqa_loss_is_mean_sigmoid_cross_entropy_times_answers():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(3, 5)).astype(np.float32)
  target = rng.choice([0, 0.3, 0.6, 0.9, 1.0], size=(3, 5)).astype(np.float32)
  p = 1 / (1 + np.exp(-logits.astype(np.float64)))
  want = np.mean(-(target * np.log(p) + (1 - target) * np.log(1 - p))) * 5
  assert float(vqa_loss(jnp.asarray(logits), jnp.asarray(target))) == pytest.approx(want,
                                                                                      rel=1e-6)


def test_grounding_loss_ignores_masked_regions():
  logits = jnp.array([[2.0, -1.0, 0.5 - 10000.0]])  # last region is padding (additive mask)
  target = jnp.array([[0.8, 0.0, 0.0]])
  p = 1 / (1 + np.exp(-np.array([2.0, -1.0])))
  want = -(0.8 * np.log(p[0]) + 0.2 * np.log(1 - p[0]) + np.log(1 - p[1])) / 3 * 3
  assert float(grounding_loss(logits, target)) == pytest.approx(want, rel=1e-6)


def test_vcr_scores_split_answers_then_rationales():
  score = jnp.arange(16.0)  # 2 items x (4 answers, 4 rationales), the loader's order
  qa, qar = answer_and_rationale_logits(score)
  np.testing.assert_array_equal(qa, [[0, 1, 2, 3], [8, 9, 10, 11]])
  np.testing.assert_array_equal(qar, [[4, 5, 6, 7], [12, 13, 14, 15]])


def test_flat_model_inputs_shares_or_splits_the_image():
  b, k, t, r, d = 2, 4, 3, 5, 6
  text = {key: jnp.arange(b * k * t).reshape(b, k, t) for key in
          ("input_ids", "token_type_ids", "attention_mask")}
  shared = {"image_feat": jnp.arange(b * r * d, dtype=jnp.float32).reshape(b, r, d),
            "image_loc": jnp.zeros((b, r, 5)), "image_mask": jnp.ones((b, r), jnp.int32)}
  flat, options = flat_model_inputs({**text, **shared})
  assert options == k and flat["input_ids"].shape == (b * k, t)
  np.testing.assert_array_equal(flat["image_feat"][k + 1], shared["image_feat"][1])
  per_option = {key: jnp.repeat(v[:, None], k, axis=1) + jnp.arange(k).reshape(
      (1, k) + (1,) * (v.ndim - 1)) for key, v in shared.items()}
  flat, _ = flat_model_inputs({**text, **per_option})
  np.testing.assert_array_equal(flat["image_feat"][k + 2], per_option["image_feat"][1, 2])
  single, options = flat_model_inputs({**{key: v[:, 0] for key, v in text.items()}, **shared})
  assert options is None and single["input_ids"].shape == (b, t)


def test_padded_batches_pad_and_mark_rows():
  loader = [{"example_id": np.array([0, 1, 2]), "x": np.ones((3, 2))},
            {"example_id": np.array([3]), "x": np.ones((1, 2))}]
  batches = list(padded_batches(loader, 3, 3))
  assert [b["valid"].tolist() for b in batches] == [[1, 1, 1], [1, 0, 0], [0, 0, 0]]
  assert all(b["x"].shape == (3, 2) for b in batches)
  np.testing.assert_array_equal(batches[1]["x"][1:], 0)


# ----------------------------------------------------------------------------- scoring
class _FakeSplit:
  """What the scorers read from a split: records, item index, name."""

  def __init__(self, records, task, field):
    self.records, self.name = records, "fake"
    self._index = ItemIndex(np.array([len(r[field]) for r in records]), task)

  def __len__(self):
    return len(self.records)

  def task_items(self, task):
    return self._index


def _vqa_record(qids, answers, types):
  return {"vqa_question": ["q"] * len(qids), "vqa_question_id": np.array(qids, np.int64),
          "vqa_answers": [a for ten in answers for a in ten], "vqa_answer_type": types}


def _vqa_task(vocab):
  config = tiny_task_config("vqa", "/nonexistent")
  return VQA(config, {"answer_vocab": vocab})


def test_vqa_score_is_the_official_accuracy_per_answer_type():
  vocab = ["2", "red", "yes"]
  split = _FakeSplit([
      _vqa_record([11, 12], [["2"] * 2 + ["3"] * 8, ["red"] * 10], ["number", "other"]),
      _vqa_record([13], [["yes"] * 3 + ["no"] * 7], ["yes/no"])], "vqa", "vqa_question")
  predictions = {"example_id": np.array([0, 1, 2]), "answer": np.array([0, 1, 2])}
  result, records = _vqa_task(vocab).score(predictions, split)
  # "2" matches 2 of 10 answers: mean over the 10 leave-one-out subsets of min(1, m/3)
  two = (8 * (2 / 3) + 2 * (1 / 3)) / 10
  three = (7 * 1 + 3 * (2 / 3)) / 10  # "yes" 3 times
  assert result["accuracy_number"] == pytest.approx(round(100 * two, 2))
  assert result["accuracy_other"] == 100.0
  assert result["accuracy_yes_no"] == pytest.approx(round(100 * three, 2))
  assert result["accuracy"] == pytest.approx(round(100 * (two + 1 + three) / 3, 2))
  assert records == [{"question_id": 11, "answer": "2"}, {"question_id": 12, "answer": "red"},
                     {"question_id": 13, "answer": "yes"}]


def test_vqa_without_answers_gives_only_the_prediction_file():
  split = _FakeSplit([_vqa_record([7, 8], [[], []], ["", ""])], "vqa", "vqa_question")
  result, records = _vqa_task(["a", "b"]).score(
      {"example_id": np.array([0, 1]), "answer": np.array([1, 0])}, split)
  assert result == {} and records == [{"question_id": 7, "answer": "b"},
                                      {"question_id": 8, "answer": "a"}]


def test_answer_vocab_file_sets_the_head_order(tmp_path):
  pkl = tmp_path / "trainval_label2ans.pkl"
  pkl.write_bytes(pickle.dumps(["yes", "no", "2"]))
  assert load_answer_vocab(str(pkl)) == ["yes", "no", "2"]
  (tmp_path / "v.json").write_text(json.dumps(["a", "a"]))
  with pytest.raises(ValueError, match="repeats"):
    load_answer_vocab(str(tmp_path / "v.json"))
  config = tiny_task_config("vqa", "/nonexistent", **{"task.answer_vocab_file": str(pkl)})
  task = VQA(config, {"answer_vocab": ["2", "no", "yes"]})
  assert task.answer_vocab == ["yes", "no", "2"] and task.num_answers == 3
  assert task.loader_options() == {"answer_vocab": ("yes", "no", "2")}


def test_refcoco_score_on_hand_made_boxes():
  gt = np.array([10, 10, 50, 50], np.float32)
  boxes = np.array([[0, 0, 99, 99], [10, 10, 50, 50], [12, 12, 48, 52], [60, 60, 90, 90]],
                   np.float32)  # IMG (whole image), exact, close, far
  ious = metrics.box_iou(boxes, gt[None])[:, 0]
  split = _FakeSplit([{"ref_expression": ["a", "b"], "image_id": b"img7"}], "refer",
                     "ref_expression")
  predictions = {
      "example_id": np.array([0, 1]),
      "scores": np.array([[0.0, 1.0, 5.0, 2.0], [0.0, 1.0, 2.0, 9.0]]),
      "region_iou": np.stack([ious, ious]), "image_mask": np.array([[1, 1, 1, 1], [1, 1, 1, 0]]),
      "region_boxes": np.stack([boxes, boxes])}
  task = RefCOCOPlus(tiny_task_config("refcoco_plus", "/nonexistent"), {})
  result, records = task.score(predictions, split)
  assert ious[2] >= 0.5 and ious[0] < 0.5
  # item 0 picks the close box (correct); item 1's best (far box) is padding -> the close box
  assert result == {"accuracy": 1.0}
  assert records[0]["box"] == boxes[2].tolist() and records[1]["region"] == 2
  assert records[0]["image_id"] == "img7" and records[1]["expression_index"] == 1
  predictions["scores"][1] = [0.0, 1.0, 0.5, 9.0]
  predictions["image_mask"][1] = 1  # now the far box counts: wrong
  assert task.score(predictions, split)[0]["accuracy"] == 0.5
  iou_of_top = predictions["region_iou"][1, 3]
  assert iou_of_top < 0.5


# ----------------------------------------------------------------------------- retrieval
def test_score_all_pairs_equals_brute_force_and_recall():
  cfg = small_config()
  model = vj.ViLBERTForVLTasks(cfg, outputs=("retrieval_score",))
  rng = np.random.default_rng(1)
  c, i, t, r = 5, 7, 6, 4
  captions = {"input_ids": rng.integers(1, cfg.vocab_size, (c, t)).astype(np.int32),
              "token_type_ids": np.zeros((c, t), np.int32),
              "attention_mask": np.ones((c, t), np.int32)}
  images = {"image_feat": rng.random((i, r, cfg.v_feature_size), np.float32),
            "image_loc": rng.random((i, r, 5), np.float32),
            "image_mask": np.ones((i, r), np.int32)}
  params = model.init(jax.random.key(0), *(captions[k][:1] for k in captions),
                      *(images[k][:1] for k in images))["params"]
  got = score_all_pairs(model, params, captions, images, lambda out: out.retrieval_score,
                        caption_block=2, image_block=3)
  want = np.zeros((c, i), np.float32)
  for a in range(c):
    out = model.apply({"params": params}, *(np.repeat(captions[k][a:a + 1], i, 0)
                                            for k in captions), *images.values())
    want[a] = np.asarray(out.retrieval_score)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  gt = np.array([0, 1, 2, 3, 4])
  ranks = [1 + int(np.sum(want[a] > want[a, gt[a]])) for a in range(c)]
  assert metrics.recall_at_k(got, gt)["R@1"] == pytest.approx(100 * np.mean(np.array(ranks) == 1))


# ----------------------------------------------------------------------------- end to end
def _fast_learning_config(task, data_dir):
  """No dropout and no warmup: the 4-way scores leave their (equal) start within 16 steps.
  Both end-to-end tests use it, so the second compiles from the persistent cache."""
  no_dropout = {f"model.{k}": 0.0 for k in ("hidden_dropout_prob", "v_hidden_dropout_prob",
                                            "attention_probs_dropout_prob",
                                            "v_attention_probs_dropout_prob")}
  return tiny_task_config(task, data_dir, **no_dropout, **{
      "optimizer.learning_rate": 1e-2, "optimizer.warmup_fraction": 0.0,
      "num_train_steps": 16})


@pytest.mark.parametrize("task", FINETUNED)
def test_task_loss_goes_down_on_a_fixed_batch(task, data_dir):
  config = _fast_learning_config(task, data_dir)
  split = train_data.open_dataset(config, "train")
  run = trainer.setup(config, num_examples=64, metadata=split.metadata)
  batch = next(iter(run.task.train_loader(split, train_data.tokenizer(config), seed=0)))
  batch = train_data.to_global({k: batch[k] for k in run.task.device_keys}, run.mesh)
  step, state, losses = run.jit_train_step(donate=False), run.state, []
  with jax.set_mesh(run.mesh):
    for _ in range(16):
      state, m = step(state, batch)
      losses.append(float(m["loss/total"]))
  assert losses[-1] < losses[0] - 0.05, losses


@pytest.mark.parametrize("task", FINETUNED)
def test_task_fine_tunes_and_eval_reproduces_its_metrics(task, data_dir, tmp_path):
  config = _fast_learning_config(task, data_dir)
  config.log_every_steps = 8
  final = trainer.train_and_evaluate(config, str(tmp_path))
  train = _metrics(tmp_path, "train")
  assert [m["step"] for m in train] == [8, 16]
  assert all(np.isfinite(m["loss/total"]) for m in train)
  assert final and all(np.isfinite(v) for v in final.values())
  saved = json.loads((tmp_path / "eval_metrics.json").read_text())
  (tmp_path / "eval_metrics.json").unlink()
  config.mode = "eval"
  again = trainer.evaluate_checkpoint(config, str(tmp_path))
  timing = ("step", "validation/pairs_per_s")
  assert {k: v for k, v in again.items() if k not in timing} == pytest.approx(
      {k: v for k, v in saved.items() if k not in timing}, abs=1e-6)
  assert (tmp_path / "export" / "task.json").exists()
  files = sorted(p.name for p in tmp_path.glob(f"{tasks.TASKS[task].name}_validation_*.json"))
  assert len(files) == 1, files
  records = json.loads((tmp_path / files[0]).read_text())
  expected = {"vqa": ("accuracy", "accuracy_number", "accuracy_other", "accuracy_yes_no"),
              "vcr": ("q_a_accuracy", "qa_r_accuracy", "q_ar_accuracy"),
              "refcoco_plus": ("accuracy",),
              "retrieval": ("R@1", "R@5", "R@10", "median_rank")}[task]
  assert {f"validation/{k}" for k in expected} <= set(final)
  if task == "vqa":
    assert set(records[0]) == {"question_id", "answer"} and len(records) == 4 * 48
  if task == "retrieval":
    assert len(records) == 8 and {r["rank"] for r in records} <= set(range(1, 9))


def test_fine_tuning_needs_the_pretrained_checkpoint(data_dir, tmp_path):
  config = tiny_task_config("vqa", data_dir, variant="base")
  with pytest.raises(ValueError, match="init_checkpoint"):
    trainer.train_and_evaluate(config, str(tmp_path))


@pytest.fixture(scope="module")
def pretrained(data_dir, tmp_path_factory):
  """A tiny pretraining run (its workdir) and its final metrics."""
  workdir = tmp_path_factory.mktemp("pretrained")
  config = tiny_config(data_dir, num_train_steps=4, checkpoint_every_steps=100)
  return workdir, trainer.train_and_evaluate(config, str(workdir))


def test_zero_shot_retrieval_of_a_pretrained_run(pretrained, data_dir, tmp_path):
  workdir, final = pretrained
  config = tiny_task_config("zeroshot_retrieval", data_dir, variant="base",
                            init_checkpoint=str(workdir), mode="eval")
  config.data.eval_splits = ("validation",)
  with pytest.raises(ValueError, match="mode=eval"):
    trainer.train_and_evaluate(config, str(tmp_path))
  result = trainer.evaluate_checkpoint(config, str(tmp_path))
  for k in ("R@1", "R@5", "R@10", "median_rank"):  # the pretraining eval's zero-shot numbers
    assert result[f"validation/{k}"] == pytest.approx(final[f"zero_shot/{k}"])
  assert (tmp_path / "zeroshot_retrieval_validation_rankings.json").exists()


def test_fine_tuning_starts_from_the_pretrained_run(pretrained, data_dir, tmp_path, capsys):
  workdir, _ = pretrained
  config = tiny_task_config("refcoco_plus", data_dir, variant="base",
                            init_checkpoint=str(workdir), num_train_steps=1)
  trainer.train_and_evaluate(config, str(tmp_path))
  out = capsys.readouterr().out
  fresh = [line for line in out.splitlines() if "freshly initialised" in line]
  assert fresh and "ignored 0" in fresh[0], out


@pytest.fixture(scope="module", params=[("original_small_tasks", "neurips", 11),
                                        ("original_small_tasks_12in1", "12in1", 3129)])
def released(request, fixtures_dir, tmp_path_factory):
  """An original task checkpoint of reference/ (NeurIPS or 12-in-1 heads), through the
  converter CLI: ``(params directory, head variant, its number of VQA answers)``."""
  name, variant, num_answers = request.param
  out = tmp_path_factory.mktemp("released") / "params"
  assert convert_main(["original", "--checkpoint", str(fixtures_dir / f"{name}.npz"),
                       "--config", str(fixtures_dir / "original_small_config.json"),
                       "--output", str(out)]) == 0
  return out, variant, num_answers


def _released_config(task, data_dir, released):
  path, variant, num_answers = released
  config = tiny_task_config(task, data_dir, variant="base", init_checkpoint=str(path),
                            mode="eval", **{"data.synthetic.feature_dim": 32,
                                            "task.num_answers": num_answers,
                                            "task.head_variant": variant})
  for k, v in load_spec(path).config.__dict__.items():
    config.model[k] = v
  return config


def test_released_checkpoint_evaluates_without_training(released, data_dir, tmp_path, capsys):
  config = _released_config("refcoco_plus", data_dir, released)
  result = trainer.evaluate_checkpoint(config, str(tmp_path))
  assert 0 <= result["validation/accuracy"] <= 1
  assert "kept 0 freshly initialised, ignored 0" in capsys.readouterr().out
  # The synthetic VQA vocabulary has 35 answers, the released head another number.
  with pytest.raises(ValueError, match=f"vqa_head.*checkpoint .*{released[2]}"):
    trainer.evaluate_checkpoint(_released_config("vqa", data_dir, released), str(tmp_path))


# ----------------------------------------------------------------------------- predict API
@pytest.fixture(scope="module")
def vqa_run(data_dir, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("vqa_run")
  trainer.train_and_evaluate(tiny_task_config("vqa", data_dir, num_train_steps=2), str(workdir))
  return workdir


def _scene(data_dir):
  """The first validation scene of the tiny synthetic dataset, as a feature store gives it."""
  split = train_data.open_dataset(tiny_task_config("vqa", data_dir), "validation")
  record = split.records[0]
  return RegionFeatures("v0", record["features"], record["boxes"], int(record["image_w"]),
                        int(record["image_h"]), record["cls_prob"])


def test_predictor_answers_ranks_and_grounds(vqa_run, data_dir):
  predictor = Predictor.load(str(vqa_run))
  image = _scene(data_dir)
  answers = predictor.answer("what color is the cat ?", image, top_k=3)
  probs = [p for _, p in answers]
  assert len(answers) == 3 and probs == sorted(probs, reverse=True)
  assert all(a in predictor.answer_vocab for a, _ in answers)
  everything = predictor.answer("what color is the cat ?", image, top_k=1000)
  assert len(everything) == len(predictor.answer_vocab) and everything[:3] == answers
  assert all(0 < p < 1 for _, p in everything)
  ranked, maps = predictor.rank_captions(image, ["a red cat .", "a blue bus .", "two dogs ."],
                                         attention=True)
  scores = [s for _, s in ranked]
  assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
  assert maps and all(m.ndim == 3 for m in maps.values())
  grounding = predictor.ground("the red cat", image)
  assert grounding.region == int(np.argmax(grounding.scores))
  assert len(grounding.box) == 4 and 0 <= grounding.probability <= 1


def test_readme_predict_example_runs(vqa_run, data_dir, tmp_path, capsys):
  """The README's predict example, on a tiny VQA run and a scene saved as a .npz store."""
  readme = (pathlib.Path(__file__).parents[1] / "README.md").read_text()
  block = next(b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "Predictor" in b)
  scene = _scene(data_dir)
  np.savez(tmp_path / "validation_0.npz", features=scene.features, boxes=scene.boxes,
           image_w=scene.image_w, image_h=scene.image_h, cls_prob=scene.cls_prob)
  code = block.replace("/tmp/vqa_synthetic", str(vqa_run)).replace("/tmp/scene_features",
                                                                    str(tmp_path))
  exec(code, {})  # pylint: disable=exec-used
  printed = capsys.readouterr().out.splitlines()
  assert printed[0].startswith("[(") and "a red cat ." in printed[1]
  assert "attention" in printed[-1] or "/" in printed[-1]


@pytest.mark.parametrize("name", ["vqa", "vcr", "refcoco_plus", "retrieval_flickr30k",
                                  "zeroshot_flickr30k"])
def test_task_configs_load_with_paper_settings(name):
  module = importlib.import_module(f"configs.{name}")
  for variant in common.MODEL_VARIANTS:
    config = module.get_config(variant)
    assert config.task.name in tasks.TASKS
    assert config.init.required == (variant != "no_pretraining")
    assert config.num_epochs == 20 and config.data.num_visual_tokens == 101
  config = module.get_config()
  paper = common.FINETUNING[config.task.name]
  assert (config.batch_size, config.optimizer.learning_rate) == (paper["batch_size"],
                                                                 paper["learning_rate"])
  assert config.model.v_biattention_id == tuple(range(6))  # 6 co-attention layers
  assert module.get_config("coattn2").model.v_biattention_id == (0, 1)
  assert module.get_config("single_stream").model.single_stream
  twin = importlib.import_module(f"configs.{name}_synthetic").get_config()
  assert twin.task.name == config.task.name and twin.data.name == "vilbert_synthetic_scenes"
