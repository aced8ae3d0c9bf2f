"""The synthetic scenes builder: builds, reads back with tfds.data_source, is learnable."""
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow_datasets as tfds

from data_fixtures import SYNTHETIC_SIZES, synthetic_split  # noqa: F401  (fixture)
from vilbert_jax.data import pipeline, synthetic, tfds_io, tokenizer
from vilbert_jax.data.build import build_synthetic


def test_reads_back_with_tfds_data_source(synthetic_split):  # noqa: F811
  name, data_dir = synthetic_split
  sources = tfds.data_source(name, data_dir=data_dir)
  assert {s: len(sources[s]) for s in sources} == {"train": 120, "validation": 30, "test": 30}
  record = sources["train"][5]
  n = len(record["boxes"])
  assert 10 <= n <= 36 and record["features"].shape == (n, 16)
  assert record["cls_prob"].shape == (n, 21) and record["features"].dtype == np.float32
  assert np.all(record["features"] >= 0)
  assert len(record["captions"]) == 5 and len(record["vqa_answers"]) == 10 * len(
      record["vqa_question"])
  assert record["hard_negatives"].shape == (100,) and 5 not in record["hard_negatives"]
  split = tfds_io.open_split(name, data_dir, "train")
  assert split.items["captions"].total == 600 and len(split.items["vqa"].counts) == 120
  image, annotations = synthetic.SceneGenerator(synthetic.SceneConfig(
      feature_dim=16)).scene("train", 5)
  np.testing.assert_array_equal(record["features"], image.features)
  assert [c.decode() for c in record["captions"]] == annotations["captions"]


def test_rebuild_returns_at_once_and_sizes_get_their_own_folder(synthetic_split):  # noqa: F811
  name, data_dir = synthetic_split
  start = time.perf_counter()
  assert build_synthetic(data_dir, **SYNTHETIC_SIZES) == name
  assert time.perf_counter() - start < 1.0
  other = build_synthetic(data_dir, **{**SYNTHETIC_SIZES, "num_train": 20, "float16": True})
  assert other != name
  record = tfds.data_source(other, data_dir=data_dir)["train"][0]
  assert record["features"].dtype == np.float16


def test_scenes_are_deterministic_and_splits_differ():
  gen = synthetic.SceneGenerator(synthetic.SceneConfig(feature_dim=8))
  a, b = gen.scene("train", 3), gen.scene("train", 3)
  np.testing.assert_array_equal(a[0].features, b[0].features)
  assert a[1]["captions"] == b[1]["captions"]
  other = gen.scene("test", 3)[0].features
  assert other.shape != a[0].features.shape or not np.array_equal(other, a[0].features)


def test_captions_mention_scene_objects_and_features_predict_classes():
  """Learnability: a nearest-centroid classifier recovers each region's class from features."""
  gen = synthetic.SceneGenerator(synthetic.SceneConfig(feature_dim=64))
  feats, labels = [], []
  for i in range(300):
    image, ann = gen.scene("train", i)
    classes = {synthetic.CLASSES[c - 1] for c in image.cls_prob.argmax(1) if c > 0}
    for caption in ann["captions"]:
      assert any(name in caption for name in classes), caption
    feats.append(image.features)
    labels.append(image.cls_prob.argmax(1))
  feats, labels = np.concatenate(feats), np.concatenate(labels)
  half = len(feats) // 2
  centroids = np.stack([feats[:half][labels[:half] == c].mean(0) for c in range(21)])
  pred = ((feats[half:, None] - centroids[None]) ** 2).sum(-1).argmin(1)
  # cls_prob is a noisy detector output: compare against its argmax where it is confident.
  assert (pred == labels[half:]).mean() > 0.9


def test_captions_side_file_matches_records(synthetic_split):  # noqa: F811
  name, data_dir = synthetic_split
  split = tfds_io.open_split(name, data_dir, "validation")
  assert split.caption_records is not None
  for r in (0, 7, 29):
    captions = [c.decode() for c in split.records[r]["captions"]]
    assert [split.caption(r, k) for k in range(5)] == captions


def test_dataset_without_item_counts_or_side_file_is_readable(tmp_path):
  """As TFDS's own writer (`tfds build`, with TensorFlow) leaves it: items counted on open."""
  name = build_synthetic(str(tmp_path), feature_dim=8, num_train=30, num_validation=5,
                         num_test=5)
  folder = tfds_io.dataset_dir(name, str(tmp_path))
  with open(os.path.join(folder, "metadata.json")) as f:
    metadata = json.load(f)
  del metadata["item_counts"]
  with open(os.path.join(folder, "metadata.json"), "w") as f:
    json.dump(metadata, f)
  os.remove(tfds_io.captions_path(folder, "vilbert_synthetic_scenes", "train"))
  split = tfds_io.open_split(name, str(tmp_path), "train")
  assert split.items["captions"].total == 150 and split.caption_records is None
  assert split.caption(3, 1) == split.records[3]["captions"][1].decode()
  batch = next(iter(pipeline.pretraining_loader(split, tokenizer.synthetic_tokenizer(),
                                                batch_size=4, seed=0, shard=(0, 1))))
  assert batch["image_feat"].shape == (4, 37, 8)


def test_build_synthetic_rejects_unknown_options(tmp_path):
  with pytest.raises(ValueError, match=r"configs have no options \['feature_width'\]"):
    build_synthetic(str(tmp_path), feature_width=3)


def test_building_imports_neither_jax_nor_grain():
  """A build (and every Beam worker, which imports the same modules before its first shard)
  imports the package lazily: no JAX, Flax, grain or TensorFlow; the package's names still
  resolve on first use."""
  code = """
import sys
import tfds_builders.build, vilbert_jax.data.beam_build
heavy = sorted(m for m in ("jax", "flax", "grain", "tensorflow") if m in sys.modules)
assert not heavy, heavy
import vilbert_jax as vj, vilbert_jax.data as vd
assert "ViLBERTModel" in dir(vj) and "open_split" in dir(vd)
assert vd.open_split.__module__ == "vilbert_jax.data.tfds_io"
assert vj.ViLBERTModel.__name__ == "ViLBERTModel" and vj.convert.__name__ == "vilbert_jax.convert"
for module in (vj, vd):
  try:
    module.no_such_name
    raise SystemExit("no AttributeError")
  except AttributeError as e:
    assert "no_such_name" in str(e)
print("ok")
"""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  proc = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                        check=False)
  assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]
