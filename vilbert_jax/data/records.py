"""The record layout shared by every builder: one image's regions plus its task items.

Each record holds one image (`image_id`, `image_w`, `image_h`, `features [N,D]`, `boxes [N,4]`
in pixels, optionally `cls_prob [N,C]`) and lists of task items about it. The items of task
`t` are the entries of the list field `ITEM_FIELDS[t]` (and their parallel fields); the build
records each record's item count in the dataset metadata so pipelines can address items
without reading records.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, Optional, Tuple

import numpy as np
import tensorflow_datasets as tfds

from vilbert_jax.data.features import FeatureStoreError, RegionFeatures

NUM_ANSWERS = 10  # human answers per VQA question, stored flat: question k owns [10k, 10k+10)
NUM_OPTIONS = 4  # multiple-choice options per VCR item, stored flat the same way
_FLOAT16_MAX = float(np.finfo(np.float16).max)  # 65504

# task -> list field whose entries are the task's items.
ITEM_FIELDS = {
    "captions": "captions",  # pretraining pairs and retrieval captions
    "vqa": "vqa_question",  # parallel: vqa_answers (10 per question), vqa_question_id
    "refer": "ref_expression",  # parallel: ref_box [K,4] pixels
    "vcr": "mc_question",  # parallel: mc_answers / mc_rationales (4 per question) + labels
}


@dataclasses.dataclass(eq=False)
class RegionBuilderConfig(tfds.core.BuilderConfig):
  """Builder options common to all region-feature datasets.

  Attributes:
    feature_dim: region feature width D (2048 for bottom-up-attention features).
    float16: store features and class distributions as float16 (half the disk; pipelines
      return float32 either way).
  """
  feature_dim: int = 2048
  float16: bool = False


def _floats(width: Optional[int], float16: bool) -> tfds.features.Tensor:
  # 'bytes' encoding stores raw array bytes: ~30x faster to write than float lists.
  return tfds.features.Tensor(shape=(None, width), dtype=np.float16 if float16 else np.float32,
                              encoding="bytes")


def image_feature_spec(config: RegionBuilderConfig, cls_prob_width: Optional[int]) -> Dict:
  """TFDS features of the image part; `cls_prob_width` None omits `cls_prob`."""
  spec = {"image_id": tfds.features.Text(), "image_w": np.int32, "image_h": np.int32,
          "features": _floats(config.feature_dim, config.float16),
          "boxes": tfds.features.Tensor(shape=(None, 4), dtype=np.float32, encoding="bytes")}
  if cls_prob_width is not None:
    spec["cls_prob"] = _floats(cls_prob_width, config.float16)
  return spec


# Example key of an image a Beam build's worker fills in: (DeferredImage, cls_prob_width).
DEFERRED_IMAGE = "__deferred_image__"


@dataclasses.dataclass(frozen=True)
class DeferredImage:
  """Stands in for an image's `RegionFeatures` while a Beam build plans its shards: where the
  image is, for a worker to read and decode (vilbert_jax/data/beam_build.py).

  Attributes:
    image_id: the image's id.
    store: path of the feature store (as given to `open_feature_store`).
    tsv_line: (file, row, byte offset, length) of the image's line in a TSV store, else None.
  """
  image_id: str
  store: str
  tsv_line: Optional[Tuple[str, int, int, int]] = None


def storage_problem(record: RegionFeatures, config: RegionBuilderConfig,
                    cls_prob_width: Optional[int] = None) -> Optional[str]:
  """What keeps `record` from being stored under `config`, or None if nothing does.

  Args:
    cls_prob_width: the class-distribution width the dataset stores, or None if it stores none.
  """
  if cls_prob_width is not None:
    if record.cls_prob is None:
      return "the store has no cls_prob, which this dataset needs (masked-region targets)"
    if record.cls_prob.shape[1] != cls_prob_width:
      return (f"cls_prob has {record.cls_prob.shape[1]} classes, the dataset config expects "
              f"{cls_prob_width} (--cls_prob_width)")
  if config.float16:
    arrays = {"features": record.features}
    if cls_prob_width is not None:
      arrays["cls_prob"] = record.cls_prob
    for name, values in arrays.items():
      peak = float(np.abs(values).max())
      if peak > _FLOAT16_MAX:
        return (f"{name} holds {peak:.4g}, beyond float16's largest value {_FLOAT16_MAX:g} "
                "(it would be stored as inf); build without --float16")
  return None


def check_storable(record: RegionFeatures, config: RegionBuilderConfig,
                   cls_prob_width: Optional[int] = None) -> None:
  """Raises FeatureStoreError naming the image if `storage_problem` finds one: the check of
  records that come from no store (generated scenes), before `image_example`."""
  problem = storage_problem(record, config, cls_prob_width)
  if problem is not None:
    raise FeatureStoreError(f"image_id {record.image_id}: {problem}")


def image_example(record: RegionFeatures, config: RegionBuilderConfig,
                  cls_prob_width: Optional[int] = None) -> Dict:
  """The image part of a record, in the dtypes of `image_feature_spec`.

  Args:
    record: the image, which `storage_problem` (same config and width) has already passed:
      checked once, where the file and row are known (`RegionDatasetBuilder.images`, a Beam
      worker's `beam_build._with_image`); a `DeferredImage` gives a placeholder a Beam
      worker replaces.
    cls_prob_width: the class-distribution width to store, or None to store none.
  """
  if isinstance(record, DeferredImage):
    return {DEFERRED_IMAGE: (record, cls_prob_width)}
  dtype = np.float16 if config.float16 else np.float32
  out = {"image_id": record.image_id, "image_w": record.image_w, "image_h": record.image_h,
         "features": record.features.astype(dtype), "boxes": record.boxes.astype(np.float32)}
  if cls_prob_width is not None:
    out["cls_prob"] = record.cls_prob.astype(dtype)
  return out


def item_counts(example: Dict) -> Dict[str, int]:
  """Number of items of each task in one example (only tasks whose field exists)."""
  return {task: len(example[field]) for task, field in ITEM_FIELDS.items() if field in example}

