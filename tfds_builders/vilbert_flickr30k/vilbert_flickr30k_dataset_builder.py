"""vilbert_flickr30k: Flickr30k images with their 5 captions, Karpathy splits.

Manual dir layout (`--manual_dir`):

  dataset_flickr30k.json   Karpathy's split file: {"images": [{"filename": "1000092795.jpg",
                           "split": "train"|"restval"|"val"|"test", "sentences": [{"raw": ...}]}]}
  features(.tsv|.lmdb|/)   region features keyed by the file name without extension

Build: python -m tfds_builders.build vilbert_flickr30k --manual_dir DIR --data_dir D

Splits `train` (train + restval), `validation`, `test` (1000 images, 5000 captions). Train
records also hold `hard_negatives`: the record indices of the 100 training images nearest by
mean region feature, for the retrieval training's hard-negative caption.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Dict, List

import numpy as np
import tensorflow_datasets as tfds

from vilbert_jax.data import hard_negatives, records
from vilbert_jax.data.builder_base import RegionDatasetBuilder, find_input

_SPLITS = {"train": ("train", "restval"), "validation": ("val",), "test": ("test",)}


@dataclasses.dataclass(eq=False)
class RetrievalConfig(records.RegionBuilderConfig):
  """Attributes: num_hard_negatives: nearest training images kept per training image."""
  num_hard_negatives: int = 100


class Builder(RegionDatasetBuilder):
  """Flickr30k retrieval: image regions, 5 captions, hard negatives on train."""
  name = "vilbert_flickr30k"
  BUILDER_CONFIGS = [RetrievalConfig(name="default")]
  MANUAL_DOWNLOAD_INSTRUCTIONS = __doc__

  def _info(self) -> tfds.core.DatasetInfo:
    spec = records.image_feature_spec(self.builder_config, None)
    spec["captions"] = tfds.features.Sequence(tfds.features.Text())
    spec["hard_negatives"] = tfds.features.Tensor(shape=(None,), dtype=np.int32)
    return self._dataset_info(spec)

  def _split_generators(self, dl_manager):
    manual_dir = self._start(dl_manager)
    path = find_input(manual_dir, "dataset_flickr30k.json")
    with open(path) as f:
      images = json.load(f)["images"]
    splits = {}
    for split, karpathy in _SPLITS.items():
      captions = {os.path.splitext(im["filename"])[0]: [s["raw"] for s in im["sentences"]]
                  for im in images if im["split"] in karpathy}
      if captions:
        splits[split] = self._generate_examples(captions, manual_dir, split == "train")
    return splits

  def _generate_examples(self, captions: Dict[str, List[str]], manual_dir: str,
                         with_negatives: bool):
    if with_negatives:  # First pass: which images are usable, and their mean features.
      usable, means = [], []
      for image_id, image in self.images(manual_dir, "features", captions, decoded=True):
        usable.append(image_id)
        means.append(image.features.mean(0))
      neighbours = hard_negatives.nearest_images(np.stack(means),
                                                 self.builder_config.num_hard_negatives)
      captions = {i: captions[i] for i in usable}
    for key, (image_id, image) in enumerate(self.images(manual_dir, "features", captions)):
      example = records.image_example(image, self.builder_config)
      example["captions"] = captions[image_id]
      example["hard_negatives"] = neighbours[key] if with_negatives else np.zeros(0, np.int32)
      yield key, example
