"""What the TFDS builders over region-feature stores share: options, skips, input lookup."""
from __future__ import annotations

import functools
import os
from typing import Iterable, Iterator, Optional, Tuple

import tensorflow_datasets as tfds

from vilbert_jax.data import records, store_reader
from vilbert_jax.data.features import FeatureStore, RegionFeatures, open_feature_store


class RegionDatasetBuilder(tfds.core.GeneratorBasedBuilder):
  """Base of builders that join annotations with a feature store (abstract: not registered).

  Args (besides TFDS's):
    skip_bad_rows: skip images whose features are missing or bad instead of stopping;
      skipped rows are listed in the dataset metadata (`skipped_rows`).
    num_workers: processes decoding feature records (0 = this process).
  """

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  DEFAULT_CONFIG_NAME = "default"

  def __init__(self, *, skip_bad_rows: bool = False, num_workers: int = 0, **kwargs):
    super().__init__(**kwargs)
    self.skips = store_reader.SkipLog(allowed=skip_bad_rows)
    self.num_workers = num_workers
    self.defer_decoding = False  # set by a Beam build's planner (vilbert_jax/data/beam_build.py)
    self._stores = {}

  def _metadata(self) -> tfds.core.MetadataDict:
    return tfds.core.MetadataDict()

  def _dataset_info(self, spec: dict) -> tfds.core.DatasetInfo:
    """The DatasetInfo of feature ``spec``; records keep build order (no TFDS shuffling)."""
    return tfds.core.DatasetInfo(builder=self, description=self.MANUAL_DOWNLOAD_INSTRUCTIONS,
                                 features=tfds.features.FeaturesDict(spec),
                                 metadata=self._metadata(), disable_shuffling=True)

  def _start(self, dl_manager) -> str:
    """Checks the manual dir and records the skip list in the metadata; returns the dir."""
    manual_dir = dl_manager.manual_dir
    if manual_dir is None or not os.path.isdir(manual_dir):
      raise FileNotFoundError(f"{self.name} needs --manual_dir with its source files:\n"
                              f"{self.MANUAL_DOWNLOAD_INSTRUCTIONS}")
    # The same list object fills up during generation; metadata is written after it.
    self.info.metadata["skipped_rows"] = self.skips.skipped
    return os.fspath(manual_dir)

  def images(self, manual_dir: str, stem: str, image_ids: Iterable[str],
             cls_prob_width: Optional[int] = None, decoded: bool = False
             ) -> Iterator[Tuple[str, RegionFeatures]]:
    """(image_id, record) of each id from the store `stem`, honouring skips and workers.

    Records this dataset cannot store (`records.storage_problem`: a missing or wrong-width
    `cls_prob` when `cls_prob_width` is given, float16 overflow) are bad rows too. While a Beam
    build plans (`defer_decoding`), records are `records.DeferredImage`s that its workers
    decode and check, unless `decoded` (a pass that reads the features themselves).
    """
    store = self.open_store(manual_dir, stem)
    if self.defer_decoding and not decoded:
      return store_reader.deferred(store, _store_path(manual_dir, stem), image_ids, self.skips)
    check = functools.partial(records.storage_problem, config=self.builder_config,
                              cls_prob_width=cls_prob_width)
    return store_reader.images(store, image_ids, self.skips, self.num_workers, check)

  def open_store(self, manual_dir: str, stem: str) -> FeatureStore:
    """The feature store `manual_dir/stem(.tsv|.lmdb|/)`, opened once per build."""
    if stem not in self._stores:
      self._stores[stem] = open_feature_store(_store_path(manual_dir, stem),
                                              self.builder_config.feature_dim)
    return self._stores[stem]


def _store_path(manual_dir: str, stem: str) -> str:
  return find_input(manual_dir, stem, (".tsv", ".lmdb", ""))


def find_input(manual_dir: str, stem: str, suffixes=("",), required: bool = True
               ) -> Optional[str]:
  """`manual_dir/stem + suffix` for the first suffix that exists; else error or None."""
  for suffix in suffixes:
    path = os.path.join(manual_dir, stem + suffix)
    if os.path.exists(path):
      return path
  if required:
    names = " or ".join(stem + s for s in suffixes)
    raise FileNotFoundError(f"{manual_dir} lacks {names}")
  return None
