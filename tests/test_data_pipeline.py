"""Pretraining and task pipelines over the synthetic dataset: semantics, determinism, resume."""
from absl import flags
import numpy as np
import pytest

from data_fixtures import synthetic_split  # noqa: F401  (fixture)
from vilbert_jax.data import pipeline, tasks, tfds_io
from vilbert_jax.data.masking import MaskingConfig
from vilbert_jax.data.tokenizer import synthetic_tokenizer

TOK = synthetic_tokenizer()


@pytest.fixture(scope="module")
def train(synthetic_split):  # noqa: F811
  name, data_dir = synthetic_split
  return tfds_io.open_split(name, data_dir, "train")


def _batches(split, n, seed=0, **kw):
  loader = pipeline.pretraining_loader(split, TOK, batch_size=16, seed=seed, shard=(0, 1), **kw)
  it = iter(loader)
  return [next(it) for _ in range(n)]


def test_pretraining_batch_contract(train):
  b = _batches(train, 1)[0]
  shapes = {"input_ids": (16, 36), "token_type_ids": (16, 36), "attention_mask": (16, 36),
            "image_feat": (16, 37, 16), "image_loc": (16, 37, 5), "image_mask": (16, 37),
            "masked_lm_labels": (16, 36), "image_label": (16, 36),
            "image_target": (16, 36, 21), "alignment_label": (16,)}
  assert {k: v.shape for k, v in b.items()} == shapes
  for k, v in b.items():
    assert v.dtype == (np.float32 if k in ("image_feat", "image_loc", "image_target")
                       else np.int32), k


def test_float16_batches_are_the_float32_batches_rounded(train):
  full, half = _batches(train, 1)[0], _batches(train, 1, feature_dtype="float16")[0]
  for key in ("image_feat", "image_target"):
    assert half[key].dtype == np.float16, key
  np.testing.assert_array_equal(half["image_target"], full["image_target"].astype(np.float16))
  np.testing.assert_array_equal(half["image_feat"][:, 1:], full["image_feat"][:, 1:].astype(
      np.float16))
  # The IMG token averages the float16 regions (in float32): within one float16 step.
  np.testing.assert_allclose(half["image_feat"][:, 0], full["image_feat"][:, 0], rtol=1e-3)
  for key in set(full) - {"image_feat", "image_target"}:
    np.testing.assert_array_equal(half[key], full[key])


def test_img_token_is_mean_of_masked_regions_and_padding_is_clean(train):
  for b in _batches(train, 6):
    n = b["image_mask"].sum(1) - 1
    for i in range(16):
      regions = b["image_feat"][i, 1:n[i] + 1]
      np.testing.assert_allclose(b["image_feat"][i, 0], regions.mean(0), rtol=1e-5, atol=1e-6)
      np.testing.assert_allclose(b["image_loc"][i, 0], [0, 0, 1, 1, 1])
      assert np.all(b["image_feat"][i, n[i] + 1:] == 0)
      assert np.all(b["image_loc"][i, n[i] + 1:] == 0)
      masked_zero = b["image_label"][i, :n[i]] == 1
      # Zeroed features only where a region is masked.
      assert np.all(b["image_label"][i, :n[i]][np.all(regions == 0, axis=1)] == 1)
      assert masked_zero.sum() >= np.all(regions == 0, axis=1).sum()
    region_pad = b["image_mask"][:, 1:] == 0
    assert np.all(b["image_label"][region_pad] == -1)
    assert np.all(b["image_target"][region_pad] == 0)
    np.testing.assert_allclose(b["image_target"][~region_pad].sum(-1), 1, rtol=1e-5)
    text_pad = b["attention_mask"] == 0
    assert np.all(b["masked_lm_labels"][text_pad] == -1)
    assert np.all(b["input_ids"][text_pad] == TOK.pad_id)
    specials = np.isin(b["input_ids"], [TOK.cls_id, TOK.sep_id])
    assert np.all(b["masked_lm_labels"][specials] == -1)


def test_pipeline_rates(train):
  batches = _batches(train, 25)
  align = np.concatenate([b["alignment_label"] for b in batches])
  assert abs(align.mean() - 0.5) < 0.12  # 400 draws: 4.8 sigma
  words = np.concatenate([b["masked_lm_labels"] for b in batches])
  real = np.concatenate([b["attention_mask"] for b in batches]).sum() - 2 * len(align)
  assert abs((words != -1).sum() / real - 0.15) < 0.03
  region_labels = np.concatenate([b["image_label"] for b in batches])
  regions = np.concatenate([b["image_mask"] for b in batches]).sum() - len(align)
  assert abs((region_labels == 1).sum() / regions - 0.15) < 0.03


def test_masked_losses_only_on_matching_pairs(train):
  for b in _batches(train, 4, masking=MaskingConfig(masked_loss_on_mismatch=False)):
    neg = b["alignment_label"] == 1
    assert neg.any() and (~neg).any()
    assert np.all(b["masked_lm_labels"][neg] == -1) and np.all(b["image_label"][neg] == -1)
    assert (b["masked_lm_labels"][~neg] != -1).any()


def test_same_seed_same_batches_and_resume(train):
  first, again, other = _batches(train, 3), _batches(train, 3), _batches(train, 3, seed=1)
  for a, b in zip(first, again):
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])
  assert not np.array_equal(first[0]["input_ids"], other[0]["input_ids"])

  loader = pipeline.pretraining_loader(train, TOK, batch_size=16, seed=3, shard=(0, 1))
  it = iter(loader)
  for _ in range(2):
    next(it)
  state = it.get_state()
  expected = [next(it) for _ in range(3)]
  resumed = iter(pipeline.pretraining_loader(train, TOK, batch_size=16, seed=3, shard=(0, 1)))
  resumed.set_state(state)
  for a in expected:
    b = next(resumed)
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])


def test_process_shards_split_the_epoch(train):
  """Two processes' shards of a shuffled epoch are disjoint and together cover the split
  (evaluation: every item); training drops only what does not divide into shards and batches."""
  total = len(pipeline.ItemSource(train, "vqa"))
  shards = [np.concatenate([b["example_id"] for b in tasks.task_loader(
      train, "vqa", TOK, batch_size=7, seed=0, shard=(index, 2), num_epochs=1,
      drop_remainder=False)]) for index in range(2)]
  assert not set(shards[0]) & set(shards[1])
  assert sorted(np.concatenate(shards)) == list(range(total))
  assert all(len(s) == len(set(s)) for s in shards)
  captions = len(pipeline.ItemSource(train, "captions"))
  seen = [sum(len(b["alignment_label"]) for b in pipeline.pretraining_loader(
      train, TOK, batch_size=10, seed=0, shard=(index, 2), num_epochs=1)) for index in range(2)]
  assert seen == [captions // 2 // 10 * 10] * 2


def test_task_pipelines(train):
  vqa = next(iter(tasks.task_loader(train, "vqa", TOK, batch_size=4, seed=0, shard=(0, 1))))
  assert vqa["input_ids"].shape == (4, 23) and vqa["image_feat"].shape == (4, 101, 16)
  assert vqa["target"].shape == (4, len(train.metadata["answer_vocab"]))
  assert np.all(vqa["target"].max(1) >= 0.9) and set(np.unique(vqa["target"])) <= {
      0, np.float32(0.3), np.float32(0.6), np.float32(0.9), 1}

  refer = next(iter(tasks.task_loader(train, "refer", TOK, batch_size=4, seed=0, shard=(0, 1))))
  assert refer["target"].shape == (4, 101) and refer["input_ids"].shape == (4, 20)
  assert np.all(refer["target"][refer["image_mask"] == 0] == 0)
  assert np.all((refer["target"] == 0) | (refer["target"] >= 0.5))
  assert np.all(refer["region_iou"].max(1) > 0.5)  # a proposal covers each target object

  for mode in ("vcr_q_a", "vcr_qa_r"):
    vcr = next(iter(tasks.task_loader(train, mode, TOK, batch_size=4, seed=0, shard=(0, 1))))
    assert vcr["input_ids"].shape == (4, 4, 60) and vcr["image_feat"].shape == (4, 101, 16)
    assert np.all(vcr["token_type_ids"].max(-1) == 1)
    assert np.all((0 <= vcr["label"]) & (vcr["label"] < 4))

  ret = next(iter(tasks.task_loader(train, "retrieval", TOK, batch_size=2, seed=0, shard=(0, 1))))
  assert ret["input_ids"].shape == (2, 4, 30) and ret["image_feat"].shape == (2, 4, 101, 16)
  np.testing.assert_array_equal(ret["label"], 0)
  np.testing.assert_array_equal(ret["image_feat"][:, 0], ret["image_feat"][:, 1])  # same image
  np.testing.assert_array_equal(ret["input_ids"][:, 0], ret["input_ids"][:, 2])  # same caption


def test_retrieval_eval_data(synthetic_split):  # noqa: F811
  name, data_dir = synthetic_split
  test = tfds_io.open_split(name, data_dir, "test")
  captions, images = tasks.retrieval_eval_data(test, TOK, num_images=20)
  assert images["image_feat"].shape == (20, 101, 16)
  assert captions["input_ids"].shape == (100, 30)
  np.testing.assert_array_equal(captions["image_index"], np.repeat(np.arange(20), 5))


def test_image_regions_select_only_when_over_the_limit():
  rng = np.random.default_rng(0)
  prob = np.full((50, 4), 0.01, np.float32)
  prob[:, 0] = 0.97  # every box looks like background ...
  prob[[5, 9, 30, 44], 2] = 0.9  # ... except four
  record = {"features": rng.random((50, 8), dtype=np.float32), "image_w": 100,
            "image_h": 100, "boxes": np.tile(np.array([[0, 0, 10, 10]], np.float32), (50, 1)),
            "cls_prob": prob}
  image = pipeline.image_regions(record, 36)
  # The minimum of 10: the 4 confident boxes, then the first of the tied rest; stored order.
  np.testing.assert_array_equal(image.features,
                                record["features"][[0, 1, 2, 3, 4, 5, 6, 9, 30, 44]])
  small = {**record, "boxes": record["boxes"][:20], "features": record["features"][:20],
           "cls_prob": prob[:20]}
  image = pipeline.image_regions(small, 36)  # the extractor already chose them
  np.testing.assert_array_equal(image.features, small["features"])


def test_worker_processes_give_the_same_batches(train):
  if not flags.FLAGS.is_parsed():  # grain's worker processes read absl flags
    flags.FLAGS.mark_as_parsed()
  expected = _batches(train, 2, seed=5)
  loader = pipeline.pretraining_loader(train, TOK, batch_size=16, seed=5, shard=(0, 1),
                                       worker_count=1)
  it = iter(loader)
  for a in expected:
    b = next(it)
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])
