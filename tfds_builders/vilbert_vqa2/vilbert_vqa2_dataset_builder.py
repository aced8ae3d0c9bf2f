"""vilbert_vqa2: VQA v2 questions with 10 human answers, grouped per COCO image.

Manual dir layout (`--manual_dir`), official file names:

  v2_OpenEnded_mscoco_train2014_questions.json   v2_mscoco_train2014_annotations.json
  v2_OpenEnded_mscoco_val2014_questions.json     v2_mscoco_val2014_annotations.json
  v2_OpenEnded_mscoco_test-dev2015_questions.json              (optional, no answers)
  features_trainval(.tsv|.lmdb|/)   features of train2014 + val2014 images, keyed by image id
  features_test(.tsv|.lmdb|/)       features of test2015 images (needed for test-dev)

Build: python -m tfds_builders.build vilbert_vqa2 --manual_dir DIR --data_dir D

Splits as the original code: `trainval` = train2014 + val2014 except `minval`; `minval` = the
val2014 images of the last 3000 val questions (whole images, so slightly more questions);
`test_dev` without answers. Answers are stored normalised (`vilbert_jax.metrics.vqa`); the
answer vocabulary (metadata `answer_vocab`, 3129 answers on the real data) holds the majority
answers of at least 9 train+val questions; pipelines turn answers into soft scores.
"""
from __future__ import annotations

import collections
import dataclasses
import json
from typing import Dict, List

import numpy as np
import tensorflow_datasets as tfds

from vilbert_jax.data import records
from vilbert_jax.metrics import vqa as vqa_metrics
from vilbert_jax.data.builder_base import RegionDatasetBuilder, find_input

_QUESTIONS = "v2_OpenEnded_mscoco_{}_questions.json"
_ANNOTATIONS = "v2_mscoco_{}_annotations.json"


@dataclasses.dataclass(eq=False)
class VqaConfig(records.RegionBuilderConfig):
  """Attributes: minval_questions: val questions held out as `minval`;
  min_answer_count: questions an answer must be the majority answer of to enter the vocab."""
  minval_questions: int = 3000
  min_answer_count: int = 9


def _load(path: str, key: str) -> List[Dict]:
  with open(path) as f:
    data = json.load(f)
  if key not in data:
    raise ValueError(f"{path} has no '{key}' list; is it the official VQA v2 file?")
  return data[key]


def _by_image(questions: List[Dict], answers: Dict[int, Dict]) -> Dict[int, List[Dict]]:
  """image_id -> its questions (with 'answers' added), in first-appearance order."""
  grouped = collections.OrderedDict()
  for q in questions:
    q = dict(q)
    ann = answers.get(q["question_id"])
    q["answers"] = ([vqa_metrics.normalize_answer(a["answer"]) for a in ann["answers"]]
                    if ann else [])
    q["answer_type"] = ann.get("answer_type", "") if ann else ""
    if ann and len(q["answers"]) != records.NUM_ANSWERS:
      raise ValueError(f"question {q['question_id']} has {len(q['answers'])} answers, "
                       f"expected {records.NUM_ANSWERS}")
    grouped.setdefault(q["image_id"], []).append(q)
  return grouped


class Builder(RegionDatasetBuilder):
  """VQA v2 with soft-score targets over the 3129-answer vocabulary."""
  name = "vilbert_vqa2"
  BUILDER_CONFIGS = [VqaConfig(name="default")]
  MANUAL_DOWNLOAD_INSTRUCTIONS = __doc__

  def _info(self) -> tfds.core.DatasetInfo:
    spec = records.image_feature_spec(self.builder_config, None)
    spec.update({
        "vqa_question": tfds.features.Sequence(tfds.features.Text()),
        "vqa_question_id": tfds.features.Tensor(shape=(None,), dtype=np.int64),
        "vqa_answers": tfds.features.Sequence(tfds.features.Text()),
        "vqa_answer_type": tfds.features.Sequence(tfds.features.Text()),
    })
    return self._dataset_info(spec)

  def _split_generators(self, dl_manager):
    manual_dir = self._start(dl_manager)
    c = self.builder_config
    train, val = {}, {}
    for part, grouped in (("train2014", train), ("val2014", val)):
      answers = {a["question_id"]: a for a in _load(
          find_input(manual_dir, _ANNOTATIONS.format(part)), "annotations")}
      grouped.update(_by_image(_load(find_input(manual_dir, _QUESTIONS.format(part)),
                                     "questions"), answers))
    self.info.metadata["answer_vocab"] = vqa_metrics.build_answer_vocab(
        [q["answers"] for grouped in (train, val) for qs in grouped.values() for q in qs],
        c.min_answer_count)
    minval, held = [], 0
    for image_id in reversed(list(val)):
      if held >= c.minval_questions:
        break
      minval.append(image_id)
      held += len(val[image_id])
    minval_set = set(minval)
    trainval = {**train, **{k: v for k, v in val.items() if k not in minval_set}}
    splits = {
        "trainval": self._generate_examples(trainval, manual_dir, "features_trainval"),
        "minval": self._generate_examples({k: val[k] for k in reversed(minval)}, manual_dir,
                                          "features_trainval"),
    }
    test = find_input(manual_dir, _QUESTIONS.format("test-dev2015"), required=False)
    if test:
      splits["test_dev"] = self._generate_examples(
          _by_image(_load(test, "questions"), {}), manual_dir, "features_test")
    return splits

  def _generate_examples(self, grouped: Dict[int, List[Dict]], manual_dir: str, store: str):
    images = self.images(manual_dir, store, [str(i) for i in grouped])
    for key, (image_id, image) in enumerate(images):
      questions = grouped[int(image_id)]
      example = records.image_example(image, self.builder_config)
      example["vqa_question"] = [q["question"] for q in questions]
      example["vqa_question_id"] = np.array([q["question_id"] for q in questions], np.int64)
      example["vqa_answers"] = [a for q in questions for a in q["answers"]]
      example["vqa_answer_type"] = [q["answer_type"] for q in questions]
      yield key, example
