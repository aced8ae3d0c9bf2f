"""vilbert_vcr: Visual Commonsense Reasoning, Q->A and QA->R, grouped per image.

Manual dir layout (`--manual_dir`), as distributed by VCR:

  train.jsonl, val.jsonl, test.jsonl   one item per line: img_id, objects, question,
                   answer_choices (4), answer_label, rationale_choices (4), rationale_label
                   (test items have no labels)
  features(.tsv|.lmdb|/)   region features keyed by img_id (e.g. "val-12")

Build: python -m tfds_builders.build vilbert_vcr --manual_dir DIR --data_dir D

Object tags in the text (lists of object indices) are replaced by words: people by
gender-neutral names (one per person index, as the original code does), other objects by
their class name; several tags are joined with "and". Splits `train`, `validation`, `test`;
labels of unlabelled items are -1.
"""
from __future__ import annotations

import collections
import json
from typing import Dict, List, Sequence

import numpy as np
import tensorflow_datasets as tfds

from vilbert_jax.data import records
from vilbert_jax.data.builder_base import RegionDatasetBuilder, find_input

_SPLITS = {"train": "train", "validation": "val", "test": "test"}
NAMES = ("Casey", "Riley", "Jessie", "Jackie", "Avery", "Jaime", "Peyton", "Kerry", "Jody",
         "Kendall", "Skyler", "Frankie", "Pat", "Quinn", "Morgan", "Robin", "Sam", "Alex")


def detokenize(tokens: Sequence, objects: Sequence[str]) -> str:
  """VCR token list -> text, object tags ([0, 2]) replaced by names / class names."""
  words = []
  for token in tokens:
    if isinstance(token, list):
      names = [NAMES[i % len(NAMES)] if objects[i] == "person" else objects[i] for i in token]
      words.append(" and ".join(names))
    else:
      words.append(str(token))
  return " ".join(words)


def read_items(path: str) -> Dict[str, List[Dict]]:
  """img_id -> items of that image with text resolved, in file order."""
  grouped = collections.OrderedDict()
  with open(path) as f:
    for row, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        item = json.loads(line)
        objects = item["objects"]
        answers = [detokenize(a, objects) for a in item["answer_choices"]]
        rationales = [detokenize(r, objects) for r in item["rationale_choices"]]
        question = detokenize(item["question"], objects)
      except (KeyError, IndexError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} row {row}: not a VCR item ({e!r})") from e
      if len(answers) != records.NUM_OPTIONS or len(rationales) != records.NUM_OPTIONS:
        raise ValueError(f"{path} row {row}: expected {records.NUM_OPTIONS} answer and "
                         "rationale choices")
      grouped.setdefault(item["img_id"], []).append({
          "question": question, "answers": answers, "rationales": rationales,
          "answer_label": item.get("answer_label", -1),
          "rationale_label": item.get("rationale_label", -1)})
  return grouped


class Builder(RegionDatasetBuilder):
  """VCR: 4 answers and 4 rationales per question."""
  name = "vilbert_vcr"
  BUILDER_CONFIGS = [records.RegionBuilderConfig(name="default")]
  MANUAL_DOWNLOAD_INSTRUCTIONS = __doc__

  def _info(self) -> tfds.core.DatasetInfo:
    spec = records.image_feature_spec(self.builder_config, None)
    spec.update({
        "mc_question": tfds.features.Sequence(tfds.features.Text()),
        "mc_answers": tfds.features.Sequence(tfds.features.Text()),
        "mc_answer_label": tfds.features.Tensor(shape=(None,), dtype=np.int32),
        "mc_rationales": tfds.features.Sequence(tfds.features.Text()),
        "mc_rationale_label": tfds.features.Tensor(shape=(None,), dtype=np.int32),
    })
    return self._dataset_info(spec)

  def _split_generators(self, dl_manager):
    manual_dir = self._start(dl_manager)
    splits = {}
    for split, stem in _SPLITS.items():
      path = find_input(manual_dir, stem + ".jsonl", required=False)
      if path:
        splits[split] = self._generate_examples(read_items(path), manual_dir)
    if not splits:
      raise FileNotFoundError(f"{manual_dir} has none of train.jsonl, val.jsonl, test.jsonl")
    return splits

  def _generate_examples(self, grouped: Dict[str, List[Dict]], manual_dir: str):
    for key, (image_id, image) in enumerate(self.images(manual_dir, "features", grouped)):
      items = grouped[image_id]
      example = records.image_example(image, self.builder_config)
      example["mc_question"] = [i["question"] for i in items]
      example["mc_answers"] = [a for i in items for a in i["answers"]]
      example["mc_answer_label"] = np.array([i["answer_label"] for i in items], np.int32)
      example["mc_rationales"] = [r for i in items for r in i["rationales"]]
      example["mc_rationale_label"] = np.array([i["rationale_label"] for i in items], np.int32)
      yield key, example
