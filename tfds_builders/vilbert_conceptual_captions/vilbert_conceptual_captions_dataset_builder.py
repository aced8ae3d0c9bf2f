"""vilbert_conceptual_captions: (image regions, caption) pairs for pretraining.

Manual dir layout (`--manual_dir`), one set per split (`train`, `validation`):

  captions_train.json   {"<image_id>": "<caption>", ...} as in the original release, or
  captions_train.tsv    <image_id><TAB><caption> per line (an id may repeat: several captions)
  features_train(.tsv|.lmdb|/)  a feature store with cls_prob (see vilbert_jax/data/features)
  captions_validation.json / .tsv, features_validation...   (optional split)

Build: python -m tfds_builders.build vilbert_conceptual_captions --manual_dir DIR --data_dir D
Each record is one image with its captions; images without features stop the build unless
--skip_bad_rows (then they are counted in metadata `skipped_rows`).
"""
from __future__ import annotations

import collections
import dataclasses
import json
from typing import Dict, List

import tensorflow_datasets as tfds

from vilbert_jax.data import records
from vilbert_jax.data.builder_base import RegionDatasetBuilder, find_input

SPLITS = ("train", "validation")


def read_captions(path: str) -> Dict[str, List[str]]:
  """image_id -> captions, from a JSON dict or an `id<TAB>caption` TSV, in file order."""
  captions = collections.defaultdict(list)
  if path.endswith(".json"):
    with open(path) as f:
      for image_id, caption in json.load(f).items():
        captions[str(image_id)].append(caption)
    return captions
  with open(path, encoding="utf-8") as f:
    for row, line in enumerate(f, 1):
      if not line.strip():
        continue
      parts = line.rstrip("\n").split("\t")
      if len(parts) != 2:
        raise ValueError(f"{path} row {row}: expected <image_id><TAB><caption>, found "
                         f"{len(parts)} columns")
      captions[parts[0]].append(parts[1])
  return captions


@dataclasses.dataclass(eq=False)
class CaptionsConfig(records.RegionBuilderConfig):
  """Attributes: cls_prob_width: detector classes incl. background (1601 for Visual Genome)."""
  cls_prob_width: int = 1601


class Builder(RegionDatasetBuilder):
  """Conceptual Captions pairs for the masked-modelling and alignment pretraining tasks."""
  name = "vilbert_conceptual_captions"
  BUILDER_CONFIGS = [CaptionsConfig(name="default")]
  MANUAL_DOWNLOAD_INSTRUCTIONS = __doc__

  def _info(self) -> tfds.core.DatasetInfo:
    spec = records.image_feature_spec(self.builder_config, self.builder_config.cls_prob_width)
    spec["captions"] = tfds.features.Sequence(tfds.features.Text())
    return self._dataset_info(spec)

  def _split_generators(self, dl_manager):
    manual_dir = self._start(dl_manager)
    splits = {}
    for split in SPLITS:
      path = find_input(manual_dir, f"captions_{split}", (".json", ".tsv"), required=(
          split == "train"))
      if path:
        splits[split] = self._generate_examples(path, manual_dir, f"features_{split}")
    return splits

  def _generate_examples(self, captions_path: str, manual_dir: str, store: str):
    captions = read_captions(captions_path)
    width = self.builder_config.cls_prob_width
    for key, (image_id, image) in enumerate(self.images(manual_dir, store, captions, width)):
      example = records.image_example(image, self.builder_config, width)
      example["captions"] = captions[image_id]
      yield key, example
