"""Each paper-dataset builder builds from tiny files in the real formats and reads back."""
import json
import os
import pickle

import numpy as np
import pytest
import tensorflow_datasets as tfds

from data_fixtures import (random_record, vqa_annotation, vqa_question, write_json, write_tsv,
                           write_vqa_json)
from tfds_builders.build import main as build_main
from vilbert_jax.data import tasks, tfds_io
from vilbert_jax.data.build import build_dataset
from vilbert_jax.data.features import FeatureStoreError
from vilbert_jax.data.tokenizer import synthetic_tokenizer

D, C = 8, 5  # tiny feature width and class count


def _tsv(path, ids, seed=0, **kw):
  return write_tsv(path, ids, seed, feature_dim=D, num_classes=C, **kw)


_json = write_json


def _build(name, tmp_path, manual, **kw):
  data_dir = str(tmp_path / "tfds")
  return build_dataset(name, data_dir, str(manual), feature_dim=D, **kw), data_dir


def test_conceptual_captions_json_and_tsv(tmp_path):
  manual = tmp_path / "cc"
  manual.mkdir()
  feats = _tsv(manual / "features_train.tsv", [11, 12, 13])
  _json(manual / "captions_train.json", {"12": "a dog runs", "11": "Two cats sleep"})
  (manual / "captions_validation.tsv").write_text("13\tA red bus\n13\ta bus on a road\n")
  _tsv(manual / "features_validation.tsv", [13])
  name, data_dir = _build("vilbert_conceptual_captions", tmp_path, manual, cls_prob_width=C)
  source = tfds.data_source(name, data_dir=data_dir)
  assert len(source["train"]) == 2 and len(source["validation"]) == 1
  first = source["train"][0]
  assert first["image_id"] == b"12" and first["captions"] == [b"a dog runs"]
  np.testing.assert_array_equal(first["features"], feats["12"].features)
  np.testing.assert_array_equal(first["cls_prob"], feats["12"].cls_prob)
  assert source["validation"][0]["captions"] == [b"A red bus", b"a bus on a road"]
  split = tfds_io.open_split(name, data_dir, "validation")
  assert split.items["captions"].counts.tolist() == [2]


def test_missing_image_stops_build_and_leaves_nothing_unless_skipping(tmp_path):
  manual = tmp_path / "cc"
  manual.mkdir()
  _tsv(manual / "features_train.tsv", [1, 2])
  _json(manual / "captions_train.json", {"1": "a", "404": "b", "2": "c"})
  data_dir = str(tmp_path / "tfds")
  with pytest.raises(KeyError, match="image_id 404 is not in .*features_train.tsv"):
    build_dataset("vilbert_conceptual_captions", data_dir, str(manual), feature_dim=D,
                  cls_prob_width=C)
  assert not list((tmp_path / "tfds").rglob("dataset_info.json"))
  name = build_dataset("vilbert_conceptual_captions", data_dir, str(manual), feature_dim=D,
                       cls_prob_width=C, skip_bad_rows=True)
  split = tfds_io.open_split(name, data_dir, "train")
  assert len(split) == 2
  assert len(split.metadata["skipped_rows"]) == 1 and "404" in split.metadata["skipped_rows"][0]


def test_bad_feature_row_names_file_and_row(tmp_path):
  manual = tmp_path / "cc"
  manual.mkdir()
  _tsv(manual / "features_train.tsv", [1])
  with open(manual / "features_train.tsv", "ab") as f:
    f.write(b"2\t640\t480\t2\tAAAA\tAAAA\n")
  _json(manual / "captions_train.json", {"1": "a", "2": "b"})
  with pytest.raises(FeatureStoreError, match=r"features_train.tsv row 2 \(image_id 2\)"):
    _build("vilbert_conceptual_captions", tmp_path, manual, cls_prob_width=C)


def _vqa_files(manual):
  q, a = vqa_question, vqa_annotation
  ten = lambda main, other, n_main: [main] * n_main + [other] * (10 - n_main)
  write_vqa_json(manual, "train2014", [q(1, 100, "What color?"), q(2, 100, "How many?"),
                                       q(3, 101, "Is it?")],
                 [a(1, 100, ten("Red", "blue", 8)), a(2, 100, ten("two", "3", 7)),
                  a(3, 101, ten("yes", "no", 10))])
  write_vqa_json(manual, "val2014", [q(4, 102, "What?"), q(5, 103, "Where?")],
                 [a(4, 102, ten("red", "yes", 9)), a(5, 103, ten("yes", "no", 6))])
  write_vqa_json(manual, "test-dev2015", [q(6, 200, "Why?")])


def test_vqa2_splits_answers_and_soft_scores(tmp_path):
  manual = tmp_path / "vqa"
  manual.mkdir()
  _vqa_files(manual)
  _tsv(manual / "features_trainval.tsv", [100, 101, 102, 103])
  _tsv(manual / "features_test.tsv", [200])
  data_dir = str(tmp_path / "tfds")
  name = build_dataset("vilbert_vqa2", data_dir, str(manual), feature_dim=D,
                       minval_questions=1, min_answer_count=1)
  source = tfds.data_source(name, data_dir=data_dir)
  assert {s: len(source[s]) for s in source} == {"trainval": 3, "minval": 1, "test_dev": 1}
  assert source["minval"][0]["image_id"] == b"103"
  first = source["trainval"][0]
  assert first["vqa_question_id"].tolist() == [1, 2]
  assert first["vqa_answer_type"] == [b"other", b"number"]
  assert first["vqa_answers"][:2] == [b"red", b"red"] and first["vqa_answers"][10] == b"2"
  split = tfds_io.open_split(name, data_dir, "trainval")
  assert split.metadata["answer_vocab"] == ["red", "yes", "2"]  # by count, then name
  batch = next(iter(tasks.task_loader(split, "vqa", synthetic_tokenizer(), batch_size=4,
                                      seed=0, shuffle=False, shard=(0, 1), num_epochs=1,
                                      drop_remainder=False)))
  by_id = dict(zip(batch["question_id"].tolist(), batch["target"]))
  np.testing.assert_allclose(by_id[1], [1.0, 0, 0])  # 8 x red; "blue" is not in the vocab
  np.testing.assert_allclose(by_id[2], [0, 0, 1.0])  # 7 x two -> "2"; "3" is not in vocab
  test = tfds_io.open_split(name, data_dir, "test_dev")
  assert test.records[0]["vqa_answers"] == []


def test_flickr30k_karpathy_splits_and_hard_negatives(tmp_path):
  manual = tmp_path / "flickr"
  manual.mkdir()
  ids = [f"{1000 + i}" for i in range(6)]
  splits = ["train", "train", "restval", "train", "val", "test"]
  _json(manual / "dataset_flickr30k.json", {"images": [
      {"filename": f"{i}.jpg", "split": s, "sentences": [{"raw": f"caption {k} of {i}"}
                                                          for k in range(5)]}
      for i, s in zip(ids, splits)]})
  _tsv(manual / "features.tsv", ids)
  name, data_dir = _build("vilbert_flickr30k", tmp_path, manual, num_hard_negatives=2)
  source = tfds.data_source(name, data_dir=data_dir)
  assert {s: len(source[s]) for s in source} == {"train": 4, "validation": 1, "test": 1}
  record = source["train"][2]
  assert record["image_id"] == b"1002" and len(record["captions"]) == 5
  assert record["hard_negatives"].shape == (2,) and 2 not in record["hard_negatives"]
  assert source["test"][0]["hard_negatives"].shape == (0,)


def test_refcoco_plus_refs_pickle_instances_and_iou_targets(tmp_path):
  manual = tmp_path / "refcoco+"
  manual.mkdir()
  feats = _tsv(manual / "features.tsv", [7, 8])
  target = feats["7"].boxes[3]
  x, y = float(target[0]), float(target[1])
  w, h = float(target[2] - target[0]), float(target[3] - target[1])
  _json(manual / "instances.json", {"images": [], "annotations": [
      {"id": 70, "image_id": 7, "bbox": [x, y, w, h]},
      {"id": 80, "image_id": 8, "bbox": [0, 0, 50, 50]}]})
  refs = [{"ref_id": 1, "ann_id": 70, "image_id": 7, "split": "train",
           "sentences": [{"sent": "left dog"}, {"sent": "dog on the left"}]},
          {"ref_id": 2, "ann_id": 80, "image_id": 8, "split": "testA",
           "sentences": [{"sent": "man"}]}]
  with open(manual / "refs(unc).p", "wb") as f:
    pickle.dump(refs, f, protocol=2)
  name, data_dir = _build("vilbert_refcoco_plus", tmp_path, manual)
  source = tfds.data_source(name, data_dir=data_dir)
  assert {s: len(source[s]) for s in source} == {"train": 1, "testA": 1}
  record = source["train"][0]
  assert record["ref_expression"] == [b"left dog", b"dog on the left"]
  np.testing.assert_allclose(record["ref_box"][0], target, rtol=1e-6)
  split = tfds_io.open_split(name, data_dir, "train")
  batch = next(iter(tasks.task_loader(split, "refer", synthetic_tokenizer(), batch_size=2,
                                      seed=0, shard=(0, 1))))
  # Region 4 of the visual sequence (IMG at 0) is proposal 3, the ground truth itself.
  np.testing.assert_allclose(batch["target"][:, 4], 1.0, rtol=1e-5)
  assert batch["target"].shape == (2, 101)


def test_vcr_tags_replaced_and_labels(tmp_path):
  manual = tmp_path / "vcr"
  manual.mkdir()
  item = {"img_id": "val-1", "objects": ["person", "dog", "person"],
          "question": ["Why", "is", [0, 2], "holding", [1], "?"],
          "answer_choices": [["Because", [0], "likes", [1]], ["No"], ["Yes"], ["Maybe"]],
          "answer_label": 0,
          "rationale_choices": [[[2], "smiles"], ["a"], ["b"], ["c"]], "rationale_label": 2}
  (manual / "val.jsonl").write_text(json.dumps(item) + "\n" + json.dumps(
      {**item, "answer_label": 3}) + "\n")
  test_item = {k: v for k, v in item.items() if not k.endswith("label")}
  (manual / "test.jsonl").write_text(json.dumps({**test_item, "img_id": "test-1"}) + "\n")
  rng = np.random.default_rng(0)
  os.mkdir(manual / "features")
  for image_id in ("val-1", "test-1"):  # per-image .npz store
    r = random_record(rng, image_id, feature_dim=D)
    np.savez(manual / "features" / f"{image_id}.npz", features=r.features, boxes=r.boxes,
             image_w=r.image_w, image_h=r.image_h)
  name, data_dir = _build("vilbert_vcr", tmp_path, manual)
  source = tfds.data_source(name, data_dir=data_dir)
  record = source["validation"][0]
  assert record["mc_question"][0] == b"Why is Casey and Jessie holding dog ?"
  assert record["mc_answers"][0] == b"Because Casey likes dog"
  assert record["mc_rationales"][0] == b"Jessie smiles"
  assert record["mc_answer_label"].tolist() == [0, 3]
  assert source["test"][0]["mc_answer_label"].tolist() == [-1]


def test_parallel_decoding_matches_serial_and_reports_bad_rows(tmp_path):
  manual = tmp_path / "cc"
  manual.mkdir()
  _tsv(manual / "features_train.tsv", range(40))
  with open(manual / "features_train.tsv", "ab") as f:
    f.write(b"bad\t640\t480\t2\tAAAA\tAAAA\n")
  _json(manual / "captions_train.json", {str(i): f"caption {i}" for i in [*range(40), "bad"]})
  data_dir = str(tmp_path / "tfds")
  serial = build_dataset("vilbert_conceptual_captions", data_dir, str(manual), feature_dim=D,
                         cls_prob_width=C, skip_bad_rows=True)
  parallel = build_dataset("vilbert_conceptual_captions", str(tmp_path / "tfds2"), str(manual),
                           feature_dim=D, cls_prob_width=C, skip_bad_rows=True, num_workers=2)
  a = tfds_io.open_split(serial, data_dir, "train")
  b = tfds_io.open_split(parallel, str(tmp_path / "tfds2"), "train")
  assert len(a) == len(b) == 40
  for i in (0, 17, 39):
    np.testing.assert_array_equal(a.records[i]["features"], b.records[i]["features"])
    assert a.records[i]["captions"] == b.records[i]["captions"]
  assert b.metadata["skipped_rows"] == a.metadata["skipped_rows"]
  assert "features_train.tsv row 41 (image_id bad)" in b.metadata["skipped_rows"][0]


def test_build_command_line(tmp_path, capsys):
  manual = tmp_path / "cc"
  manual.mkdir()
  _tsv(manual / "features_train.tsv", [1, 2])
  _json(manual / "captions_train.json", {"1": "a", "2": "b", "3": "c"})
  argv = ["vilbert_conceptual_captions", "--manual_dir", str(manual), "--data_dir",
          str(tmp_path / "tfds"), "--feature_dim", str(D), "--cls_prob_width", str(C),
          "--float16", "--skip_bad_rows"]
  assert build_main(argv) == 0
  out = capsys.readouterr().out
  assert "train: 2 records" in out and "skipped: image_id 3 is not in" in out
  name = "vilbert_conceptual_captions/default-cls_prob_width5-feature_dim8-float16True"
  assert tfds.data_source(name, data_dir=str(tmp_path / "tfds"))["train"][0][
      "features"].dtype == np.float16


def test_unknown_builder_option_is_an_error(tmp_path):
  with pytest.raises(ValueError, match=r"vilbert_vqa2 configs have no options \['num_train'\]"):
    build_dataset("vilbert_vqa2", str(tmp_path), str(tmp_path), num_train=3)
