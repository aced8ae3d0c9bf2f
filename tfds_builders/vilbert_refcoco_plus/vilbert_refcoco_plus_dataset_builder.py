"""vilbert_refcoco_plus: RefCOCO+ (UNC splits) expressions with ground-truth boxes.

Manual dir layout (`--manual_dir`), as distributed with the refer toolkit:

  refs(unc).p       pickled list of refs: {ref_id, ann_id, image_id, split, sentences: [{sent}]}
                    (read with the restricted unpickler: plain values only)
  instances.json    COCO-style {"annotations": [{id, image_id, bbox: [x, y, w, h]}], ...}
  features(.tsv|.lmdb|/)   features of the detection proposals of each COCO image, keyed by
                    image id; the store's boxes are the proposals the model scores

Build: python -m tfds_builders.build vilbert_refcoco_plus --manual_dir DIR --data_dir D

Splits `train`, `validation`, `testA`, `testB`. Each record is one image with one item per
sentence: `ref_expression`, `ref_box` (ground truth, pixels x1,y1,x2,y2) and `ref_id`.
Pipelines compute each proposal's IoU with the box (targets: IoU, 0 below 0.5).
"""
from __future__ import annotations

import collections
import json
from typing import Dict, List

import numpy as np
import tensorflow_datasets as tfds

from vilbert_jax.data import records
from vilbert_jax.data.builder_base import RegionDatasetBuilder, find_input
from vilbert_jax.data.features import safe_loads

_SPLITS = {"train": "train", "val": "validation", "testA": "testA", "testB": "testB"}


def load_refs(manual_dir: str) -> List[Dict]:
  path = find_input(manual_dir, "refs(unc).p")
  with open(path, "rb") as f:
    refs = safe_loads(f.read())
  if not isinstance(refs, list):
    raise ValueError(f"{path} holds a {type(refs).__name__}, expected a list of refs")
  return refs


class Builder(RegionDatasetBuilder):
  """RefCOCO+ referring expressions: regions + expression + ground-truth box."""
  name = "vilbert_refcoco_plus"
  BUILDER_CONFIGS = [records.RegionBuilderConfig(name="default")]
  MANUAL_DOWNLOAD_INSTRUCTIONS = __doc__

  def _info(self) -> tfds.core.DatasetInfo:
    spec = records.image_feature_spec(self.builder_config, None)
    spec.update({
        "ref_expression": tfds.features.Sequence(tfds.features.Text()),
        "ref_box": tfds.features.Tensor(shape=(None, 4), dtype=np.float32),
        "ref_id": tfds.features.Tensor(shape=(None,), dtype=np.int64),
    })
    return self._dataset_info(spec)

  def _split_generators(self, dl_manager):
    manual_dir = self._start(dl_manager)
    with open(find_input(manual_dir, "instances.json")) as f:
      boxes = {a["id"]: a["bbox"] for a in json.load(f)["annotations"]}
    grouped = {split: collections.OrderedDict() for split in _SPLITS.values()}
    for ref in load_refs(manual_dir):
      if ref["split"] not in _SPLITS:
        continue
      if ref["ann_id"] not in boxes:
        raise ValueError(f"ref {ref['ref_id']}: annotation {ref['ann_id']} is not in "
                         "instances.json")
      x, y, w, h = boxes[ref["ann_id"]]
      items = grouped[_SPLITS[ref["split"]]].setdefault(str(ref["image_id"]), [])
      for sentence in ref["sentences"]:
        items.append((sentence["sent"], [x, y, x + w, y + h], ref["ref_id"]))
    return {split: self._generate_examples(items, manual_dir)
            for split, items in grouped.items() if items}

  def _generate_examples(self, grouped: Dict[str, List], manual_dir: str):
    for key, (image_id, image) in enumerate(self.images(manual_dir, "features", grouped)):
      items = grouped[image_id]
      example = records.image_example(image, self.builder_config)
      example["ref_expression"] = [sentence for sentence, _, _ in items]
      example["ref_box"] = np.array([box for _, box, _ in items], np.float32)
      example["ref_id"] = np.array([ref_id for _, _, ref_id in items], np.int64)
      yield key, example
