"""Helpers and fixtures shared by the data tests (import the fixtures into a test module).

`write_manual_dir` writes a small manual dir in the real file formats of each builder
(official VQA v2 JSON, Karpathy's Flickr30k JSON, the refer toolkit's pickle, VCR jsonl,
bottom-up-attention TSV and per-image .npz stores) that builds with the builder's default
config.
"""
from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest

from vilbert_jax.data.build import build_synthetic
from vilbert_jax.data.features import RegionFeatures, encode_tsv_line

SYNTHETIC_SIZES = dict(feature_dim=16, num_train=120, num_validation=30, num_test=30)


def random_record(rng: np.random.Generator, image_id: str, num_boxes: int = 12,
                  feature_dim: int = 8, num_classes: int = 5) -> RegionFeatures:
  """A plausible detector record: boxes inside a 640x480 image, softmax class distribution."""
  xy = rng.uniform(0, 300, size=(num_boxes, 2))
  wh = rng.uniform(10, 300, size=(num_boxes, 2))
  boxes = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
  prob = rng.random((num_boxes, num_classes)).astype(np.float32)
  return RegionFeatures(image_id, rng.random((num_boxes, feature_dim), dtype=np.float32), boxes,
                        640, 480, prob / prob.sum(1, keepdims=True))


def assert_same_record(a: RegionFeatures, b: RegionFeatures) -> None:
  """Two records hold the same image: id, size, features, boxes and class distribution."""
  assert a.image_id == b.image_id and (a.image_w, a.image_h) == (b.image_w, b.image_h)
  np.testing.assert_array_equal(a.features, b.features)
  np.testing.assert_array_equal(a.boxes, b.boxes)
  if a.cls_prob is None:
    assert b.cls_prob is None
  else:
    np.testing.assert_array_equal(a.cls_prob, b.cls_prob)


def write_tsv(path, ids, seed=0, feature_dim=8, num_classes=5, **kw) -> dict:
  """A bottom-up-attention TSV of random records for `ids`; returns image_id -> record."""
  rng = np.random.default_rng(seed)
  recs = [random_record(rng, str(i), feature_dim=feature_dim, num_classes=num_classes, **kw)
          for i in ids]
  with open(path, "wb") as f:
    for r in recs:
      f.write(encode_tsv_line(r))
  return {r.image_id: r for r in recs}


def write_json(path, value) -> None:
  with open(path, "w") as f:
    json.dump(value, f)


def vqa_question(qid: int, image: int, text: str) -> dict:
  """One entry of the official `v2_OpenEnded_mscoco_*_questions.json` "questions" list."""
  return {"question_id": qid, "image_id": image, "question": text}


def vqa_annotation(qid: int, image: int, answers) -> dict:
  """One entry of the official `v2_mscoco_*_annotations.json` "annotations" list."""
  answer_type = {"two": "number", "2": "number", "yes": "yes/no", "no": "yes/no"}.get(
      answers[0], "other")
  return {"question_id": qid, "image_id": image, "multiple_choice_answer": answers[0],
          "answer_type": answer_type,
          "answers": [{"answer": x, "answer_id": i + 1} for i, x in enumerate(answers)]}


def write_vqa_json(manual, part: str, questions, annotations=None) -> None:
  """The official question (and annotation) files of `part` (train2014, val2014, ...)."""
  write_json(os.path.join(manual, f"v2_OpenEnded_mscoco_{part}_questions.json"),
             {"questions": questions})
  if annotations is not None:
    write_json(os.path.join(manual, f"v2_mscoco_{part}_annotations.json"),
               {"annotations": annotations})


def _vqa_manual(manual, feature_dim, num_classes, seed):
  # 3 questions per image; every answer is the majority of >= 9 questions, so the default
  # config (min_answer_count 9) keeps a 3-answer vocabulary.
  answers = ["yes", "no", "2"]
  parts = {"train2014": range(100, 106), "val2014": range(106, 110)}
  qid = 0
  for part, images in parts.items():
    questions, annotations = [], []
    for image in images:
      for k, text in enumerate(("is it red?", "is there a dog?", "how many cats?")):
        qid += 1
        main = answers[(image + k) % 3]
        questions.append(vqa_question(qid, image, text))
        annotations.append(vqa_annotation(qid, image, [main] * 8 + ["blue", "3"]))
    write_vqa_json(manual, part, questions, annotations)
  write_vqa_json(manual, "test-dev2015", [vqa_question(1000, 200, "what is it?")])
  write_tsv(os.path.join(manual, "features_trainval.tsv"), range(100, 110), seed,
            feature_dim, num_classes)
  write_tsv(os.path.join(manual, "features_test.tsv"), [200], seed + 1, feature_dim,
            num_classes)


def _cc_manual(manual, feature_dim, num_classes, seed):
  ids = [str(i) for i in range(10, 18)]
  write_tsv(os.path.join(manual, "features_train.tsv"), ids, seed, feature_dim, num_classes)
  write_json(os.path.join(manual, "captions_train.json"),
             {i: f"a red dog {k} sits on a mat" for k, i in enumerate(ids)})
  val_ids = [str(i) for i in range(90, 98)]  # a full evaluation batch of 8
  write_tsv(os.path.join(manual, "features_validation.tsv"), val_ids, seed + 1, feature_dim,
            num_classes)
  with open(os.path.join(manual, "captions_validation.tsv"), "w") as f:
    for i in val_ids:
      f.write(f"{i}\ttwo cats on a bed\n{i}\ta man rides a horse {i}\n")


def _flickr_manual(manual, feature_dim, num_classes, seed):
  ids = [str(1000 + i) for i in range(6)]
  splits = ["train", "train", "restval", "train", "val", "test"]
  write_json(os.path.join(manual, "dataset_flickr30k.json"), {"images": [
      {"filename": f"{i}.jpg", "split": s,
       "sentences": [{"raw": f"a dog {k} runs on {i}"} for k in range(5)]}
      for i, s in zip(ids, splits)]})
  write_tsv(os.path.join(manual, "features.tsv"), ids, seed, feature_dim, num_classes)


def _refcoco_manual(manual, feature_dim, num_classes, seed):
  feats = write_tsv(os.path.join(manual, "features.tsv"), [7, 8, 9], seed, feature_dim,
                    num_classes)
  annotations, refs = [], []
  for k, (image, split) in enumerate(zip((7, 8, 9), ("train", "val", "testA"))):
    x1, y1, x2, y2 = (float(v) for v in feats[str(image)].boxes[k])
    annotations.append({"id": 70 + k, "image_id": image, "bbox": [x1, y1, x2 - x1, y2 - y1]})
    refs.append({"ref_id": k, "ann_id": 70 + k, "image_id": image, "split": split,
                 "sentences": [{"sent": "left dog"}, {"sent": "the red cup"}]})
  write_json(os.path.join(manual, "instances.json"), {"images": [], "annotations": annotations})
  with open(os.path.join(manual, "refs(unc).p"), "wb") as f:
    pickle.dump(refs, f, protocol=2)


def _vcr_manual(manual, feature_dim, num_classes, seed):
  item = {"objects": ["person", "dog", "person"],
          "question": ["Why", "is", [0, 2], "holding", [1], "?"],
          "answer_choices": [["Because", [0], "likes", [1]], ["No"], ["Yes"], ["Maybe"]],
          "answer_label": 0,
          "rationale_choices": [[[2], "smiles"], ["a"], ["b"], ["c"]], "rationale_label": 2}
  unlabelled = {k: v for k, v in item.items() if not k.endswith("label")}
  for stem, image, value in (("train", "train-1", item), ("val", "val-1", item),
                             ("test", "test-1", unlabelled)):
    with open(os.path.join(manual, f"{stem}.jsonl"), "w") as f:
      f.write(json.dumps({**value, "img_id": image}) + "\n")
  rng = np.random.default_rng(seed)
  os.makedirs(os.path.join(manual, "features"))
  for image in ("train-1", "val-1", "test-1"):  # per-image .npz store
    r = random_record(rng, image, feature_dim=feature_dim, num_classes=num_classes)
    np.savez(os.path.join(manual, "features", f"{image}.npz"), features=r.features,
             boxes=r.boxes, image_w=r.image_w, image_h=r.image_h, cls_prob=r.cls_prob)


_MANUAL_WRITERS = {
    "vilbert_conceptual_captions": _cc_manual, "vilbert_vqa2": _vqa_manual,
    "vilbert_flickr30k": _flickr_manual, "vilbert_refcoco_plus": _refcoco_manual,
    "vilbert_vcr": _vcr_manual,
}


def write_manual_dir(name: str, manual, feature_dim: int = 2048, num_classes: int = 1601,
                     seed: int = 0) -> None:
  """Writes the source files builder `name` reads (its default config's widths by default)."""
  os.makedirs(manual, exist_ok=True)
  _MANUAL_WRITERS[name](os.fspath(manual), feature_dim, num_classes, seed)


@pytest.fixture(scope="session")
def synthetic_split(tmp_path_factory):
  """A tiny built synthetic dataset: returns (dataset name, data_dir)."""
  data_dir = os.fspath(tmp_path_factory.mktemp("tfds"))
  return build_synthetic(data_dir, **SYNTHETIC_SIZES), data_dir
