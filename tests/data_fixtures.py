"""Helpers and fixtures shared by the data tests (import the fixtures into a test module)."""
from __future__ import annotations

import os

import numpy as np
import pytest

from vilbert_jax.data.build import build_synthetic
from vilbert_jax.data.features import RegionFeatures

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


@pytest.fixture(scope="session")
def synthetic_split(tmp_path_factory):
  """A tiny built synthetic dataset: returns (dataset name, data_dir)."""
  data_dir = os.fspath(tmp_path_factory.mktemp("tfds"))
  return build_synthetic(data_dir, **SYNTHETIC_SIZES), data_dir
