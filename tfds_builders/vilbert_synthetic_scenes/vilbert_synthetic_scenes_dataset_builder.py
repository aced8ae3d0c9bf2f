"""vilbert_synthetic_scenes: deterministic synthetic detector output with every task's items.

No manual files are needed. Build (about 10 s for the default config on 2 CPU cores):

  python -m tfds_builders.build vilbert_synthetic_scenes --data_dir ~/tensorflow_datasets

or from Python, `vilbert_jax.data.build_synthetic(data_dir, feature_dim=64, ...)`. Read with
`tfds.data_source("vilbert_synthetic_scenes/default", data_dir=...)`. Each record is one image
(see `vilbert_jax/data/records.py`) with 5 captions, 4 VQA questions x 10 answers, 2 referring
expressions with target boxes, one multiple-choice item (4 answers, 4 rationales), and on the
train split the 100 nearest training images for retrieval hard negatives. Text uses the
vocabulary in `vilbert_jax/data/synthetic_vocab.txt` (all words are whole bert-base-uncased
words too).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from vilbert_jax.data import hard_negatives, records, synthetic
from vilbert_jax.metrics import vqa as vqa_metrics


@dataclasses.dataclass(eq=False)
class SyntheticScenesConfig(records.RegionBuilderConfig):
  """Sizes of the synthetic dataset (see `vilbert_jax.data.synthetic.SceneConfig`)."""
  feature_dim: int = 128
  num_classes: int = 20
  num_train: int = 5000
  num_validation: int = 500
  num_test: int = 500
  min_regions: int = 10
  max_regions: int = 36
  noise: float = 0.3
  seed: int = 0
  num_hard_negatives: int = 100

  def scene_config(self) -> synthetic.SceneConfig:
    return synthetic.SceneConfig(self.feature_dim, self.num_classes, self.min_regions,
                                 self.max_regions, self.noise, self.seed)


class Builder(tfds.core.GeneratorBasedBuilder):
  """Synthetic scenes for pretraining, VQA, referring expressions, VCR and retrieval."""
  name = "vilbert_synthetic_scenes"
  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {"1.0.0": "Initial release.",
                   "1.1.0": "VQA question ids (unique per split), answer types; answers "
                            "stored normalised."}
  BUILDER_CONFIGS = [
      SyntheticScenesConfig(
          name="default",
          description="20 classes; 128-d features unless feature_dim is changed."),
      SyntheticScenesConfig(name="paper_shapes", feature_dim=2048, num_train=2000,
                            num_validation=200, num_test=200,
                            description="2048-d features like bottom-up-attention."),
  ]
  DEFAULT_CONFIG_NAME = "default"

  def _info(self) -> tfds.core.DatasetInfo:
    c = self.builder_config
    spec = records.image_feature_spec(c, c.num_classes + 1)
    spec.update({
        "captions": tfds.features.Sequence(tfds.features.Text()),
        "vqa_question": tfds.features.Sequence(tfds.features.Text()),
        "vqa_answers": tfds.features.Sequence(tfds.features.Text()),
        "vqa_question_id": tfds.features.Tensor(shape=(None,), dtype=np.int64),
        "vqa_answer_type": tfds.features.Sequence(tfds.features.Text()),
        "ref_expression": tfds.features.Sequence(tfds.features.Text()),
        "ref_box": tfds.features.Tensor(shape=(None, 4), dtype=np.float32),
        "mc_question": tfds.features.Sequence(tfds.features.Text()),
        "mc_answers": tfds.features.Sequence(tfds.features.Text()),
        "mc_answer_label": tfds.features.Tensor(shape=(None,), dtype=np.int32),
        "mc_rationales": tfds.features.Sequence(tfds.features.Text()),
        "mc_rationale_label": tfds.features.Tensor(shape=(None,), dtype=np.int32),
        "hard_negatives": tfds.features.Tensor(shape=(None,), dtype=np.int32),
    })
    return tfds.core.DatasetInfo(
        builder=self, description=__doc__, features=tfds.features.FeaturesDict(spec),
        metadata=tfds.core.MetadataDict(), disable_shuffling=True)

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    self.info.metadata["answer_vocab"] = list(dict.fromkeys(
        vqa_metrics.normalize_answer(a) for a in synthetic.answer_vocabulary()))
    self.info.metadata["num_classes"] = self.builder_config.num_classes + 1
    c = self.builder_config
    return {"train": self._generate_examples("train", c.num_train),
            "validation": self._generate_examples("validation", c.num_validation),
            "test": self._generate_examples("test", c.num_test)}

  def _generate_examples(self, split: str, num: int):
    c = self.builder_config
    generator = synthetic.SceneGenerator(c.scene_config())
    if split == "train":
      means = np.stack([generator.scene(split, i)[0].features.mean(0) for i in range(num)])
      neighbours = hard_negatives.nearest_images(means, c.num_hard_negatives)
    for i in range(num):
      image, annotations = generator.scene(split, i)
      records.check_storable(image, c, c.num_classes + 1)
      example = {**records.image_example(image, c, c.num_classes + 1), **annotations}
      # Stored normalised ("two" -> "2"), as the VQA annotation files and vilbert_vqa2 hold them.
      example["vqa_answers"] = [vqa_metrics.normalize_answer(a) for a in example["vqa_answers"]]
      example["hard_negatives"] = (neighbours[i] if split == "train"
                                   else np.zeros(0, np.int32))
      yield i, example
