"""Builds TFDS builders into array_record files without TensorFlow, and opens them.

TFDS's own `download_and_prepare` needs TensorFlow once a split exceeds 1 GB (its shuffle
buffer spills through `tf.io.gfile`), and the `tfds build` CLI imports TensorFlow. `build`
streams each split of a `GeneratorBasedBuilder` into sharded array_record files in generation
order, writes the usual `dataset_info.json`/`features.json` plus per-record item counts in
`metadata.json` (and a captions side file per split with captions), and moves the finished
folder into place only at the end: an interrupted or failed build never looks complete.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import uuid
from typing import Dict, Optional, Tuple

import numpy as np
import tensorflow_datasets as tfds
from array_record.python import array_record_module
from etils import epath
from tensorflow_datasets.core import example_serializer, naming
from tensorflow_datasets.core import splits as splits_lib

from vilbert_jax.data import records

_SHARD_BYTES = 1 << 30  # start a new shard after ~1 GiB
# One record per group for random access; uncompressed because region features do not
# compress and decompression would cost ~4x read throughput.
_WRITER_OPTIONS = "group_size:1,uncompressed"


def is_built(builder: tfds.core.DatasetBuilder) -> bool:
  return (epath.Path(builder.data_dir) / "dataset_info.json").exists()


def build(builder: tfds.core.GeneratorBasedBuilder, manual_dir: Optional[str] = None) -> str:
  """Writes every split of `builder` under its `data_dir`; returns that folder.

  Returns at once if the dataset is already built. Errors from the builder (e.g. a bad feature
  row) abort the build and remove the partial output.
  """
  final = epath.Path(builder.data_dir)
  if is_built(builder):
    return os.fspath(final)
  with incomplete_dir(final) as tmp:
    writer = RecordSerializer(builder.info.features)
    splits = {}
    for split, generator in split_generators(builder, manual_dir, final).items():
      template = shard_template(builder, tmp, split)
      shard_paths, shard_lengths, num_bytes, split_counts = _write_split(
          generator, writer, template)
      splits[split] = (shard_paths, shard_lengths, num_bytes, split_counts)
    finish(builder, tmp, final, splits)
  return os.fspath(final)


@contextlib.contextmanager
def incomplete_dir(final: epath.Path):
  """A fresh `incomplete.*` folder next to `final`, removed if the body raises."""
  tmp = final.parent / f"incomplete.{uuid.uuid4().hex}.{final.name}"
  tmp.mkdir(parents=True)
  try:
    yield tmp
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise


def split_generators(builder, manual_dir: Optional[str], final: epath.Path) -> Dict:
  """The builder's {split: generator of (key, example)}, given its manual dir."""
  dl_manager = tfds.download.DownloadManager(
      download_dir=os.path.join(os.fspath(final.parent), "downloads"), manual_dir=manual_dir,
      manual_dir_instructions=getattr(builder, "MANUAL_DOWNLOAD_INSTRUCTIONS", None),
      dataset_name=builder.name)
  return builder._split_generators(dl_manager)  # pylint: disable=protected-access


def shard_template(builder, tmp, split: str) -> naming.ShardedFileTemplate:
  return naming.ShardedFileTemplate(data_dir=tmp, dataset_name=builder.name, split=split,
                                    filetype_suffix="array_record")


def finish(builder, tmp: epath.Path, final: epath.Path, splits: Dict[str, tuple]) -> None:
  """Names the shards as TFDS expects, writes `dataset_info.json` (last), moves `tmp` to
  `final`.

  Args:
    splits: split -> (shard paths in order, records per shard, bytes, {task: item counts}).
  """
  info = builder.info
  split_infos, counts = [], {}
  for split, (shard_paths, shard_lengths, num_bytes, split_counts) in splits.items():
    template = shard_template(builder, tmp, split)
    for i, path in enumerate(shard_paths):  # Name shards "-0000i-of-0000n" as TFDS expects.
      os.rename(path, template.sharded_filepath(shard_index=i, num_shards=len(shard_paths)))
    split_infos.append(splits_lib.SplitInfo(name=split, shard_lengths=shard_lengths,
                                            num_bytes=num_bytes, filename_template=template))
    counts[split] = split_counts
  info.set_splits(splits_lib.SplitDict(split_infos))
  info.set_file_format("array_record", override=True)
  if info.metadata is not None:
    info.metadata["item_counts"] = counts
  info.write_to_directory(tmp)
  tmp.rename(final)


def captions_path(dataset_dir, dataset_name: str, split: str) -> str:
  """The captions side file of a split (see `build`)."""
  return os.path.join(os.fspath(dataset_dir), f"{dataset_name}-{split}.captions.array_record")


class RecordSerializer:
  """Turns builder examples into the bytes of a record and of its captions side entry."""

  def __init__(self, features: tfds.features.FeaturesDict):
    self.features = features
    self._serializer = example_serializer.ExampleSerializer(features.get_serialized_info())

  def record(self, example: Dict) -> bytes:
    """Deterministic bytes (feature map in key order): equal in every process and run, so
    builds in different processes (Beam workers) write identical records."""
    proto = self._serializer.get_tf_example(self.features.encode_example(example))
    return proto.SerializeToString(deterministic=True)

  @staticmethod
  def captions(example: Dict) -> Optional[bytes]:
    """The side-file entry (JSON list of the captions), or None for records without any."""
    return json.dumps(list(example["captions"])).encode() if "captions" in example else None


def open_writer(path: str) -> array_record_module.ArrayRecordWriter:
  return array_record_module.ArrayRecordWriter(path, _WRITER_OPTIONS)


def _write_split(generator, writer: RecordSerializer, template):
  """Streams (key, example) pairs into shards; returns paths, lengths, bytes and item counts.

  Splits with captions also get a side file holding each record's captions alone (JSON list),
  so pipelines draw random captions without reading another record's region features.
  """
  paths, lengths, total = [], [], 0
  counts: Dict[str, list] = {}
  shard, shard_bytes, text_writer = None, 0, None
  for _, example in generator:
    if shard is None:
      paths.append(os.fspath(template.data_dir / f"{template.split}.part{len(paths)}"))
      shard = open_writer(paths[-1])
      lengths.append(0)
    caption = writer.captions(example)
    if caption is not None:
      if text_writer is None:
        text_writer = open_writer(captions_path(template.data_dir, template.dataset_name,
                                                template.split))
      text_writer.write(caption)
    data = writer.record(example)
    shard.write(data)
    lengths[-1] += 1
    shard_bytes += len(data)
    total += len(data)
    for task, n in records.item_counts(example).items():
      counts.setdefault(task, []).append(n)
    if shard_bytes >= _SHARD_BYTES:
      shard.close()
      shard, shard_bytes = None, 0
  for w in (shard, text_writer):
    if w is not None:
      w.close()
  return paths, lengths, total, counts


class CorruptRecordError(RuntimeError):
  """A record of a built dataset cannot be read: its array_record file is truncated or
  corrupted. The message names the file and the record; delete the dataset folder and build
  it again."""


class UnsafeDatasetError(ValueError):
  """A dataset folder's features.json names a feature class that TFDS would import."""


class CheckedRecords:
  """Random access to a split's records that names the shard file of a record it cannot read.

  Attributes:
    source: `source[i]` -> decoded record i (a TFDS data source).
    shards: (file path, number of records) of each shard, in record order.
    label: "<dataset>/<config>:<split>" for messages.
  """

  def __init__(self, source, shards, label: str):
    self.source = source
    self.shards = list(shards)
    self.label = label
    self._ends = np.cumsum([n for _, n in self.shards])

  def __len__(self) -> int:
    return len(self.source)

  def where(self, index: int) -> str:
    shard = int(np.searchsorted(self._ends, index, side="right"))
    path, _ = self.shards[shard]
    first = int(self._ends[shard - 1]) if shard else 0
    return f"{path} record {index - first}"

  def __getitem__(self, index: int):
    try:
      return self.source[index]
    except Exception as e:  # The readers raise RuntimeError, ValueError, ... on bad bytes.
      raise CorruptRecordError(
          f"{self.label} record {index} ({self.where(index)}) cannot be read, the file is "
          f"truncated or corrupted: {type(e).__name__}: {e}. Delete "
          f"{os.path.dirname(self.shards[0][0])} and build the dataset again") from e

  def check_shard_ends(self) -> None:
    """Reads the last record of every shard: a truncated file fails here, at open."""
    end = 0
    for _, n in self.shards:
      end += n
      if n:
        self[end - 1]


def feature_class_names(value) -> list:
  """Every feature class a features.json names (`pythonClassName`, legacy `type`)."""
  names = []
  if isinstance(value, dict):
    if isinstance(value.get("pythonClassName"), str):
      names.append(value["pythonClassName"])
    if isinstance(value.get("type"), str) and "content" in value:
      names.append(value["type"])
    for child in value.values():
      names += feature_class_names(child)
  elif isinstance(value, list):
    for child in value:
      names += feature_class_names(child)
  return names


def check_feature_classes(folder: str) -> None:
  """Refuses a dataset whose features.json names a class outside TFDS's own feature classes.

  TFDS imports the module of any feature class it does not know, so opening a dataset folder
  from elsewhere could run that module's code. Raises `UnsafeDatasetError` naming the file and
  the classes.
  """
  path = os.path.join(folder, "features.json")
  if not os.path.exists(path):
    return
  with open(path) as f:
    names = feature_class_names(json.load(f))
  known = tfds.features.FeatureConnector._registered_features  # pylint: disable=protected-access
  unknown = sorted({n for n in names
                    if n not in known or not n.startswith("tensorflow_datasets.core.features.")})
  if unknown:
    raise UnsafeDatasetError(
        f"{path} names feature classes {unknown}, which are not TFDS's own: opening the "
        "dataset would import their modules (code from whoever made the folder), so it is "
        "refused. Rebuild the dataset with tfds_builders")


class ItemIndex:
  """Maps a flat item index of one task to (record index, item within the record)."""

  def __init__(self, counts: np.ndarray, name: str):
    if counts.size == 0 or counts.sum() == 0:
      raise ValueError(f"{name} has no items of this task")
    self.counts = counts
    self.starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    self.total = int(counts.sum())

  def locate(self, index: int) -> Tuple[int, int]:
    record = int(np.searchsorted(self.starts, index, side="right") - 1)
    return record, int(index - self.starts[record])

  def other_record_item(self, rng: np.random.Generator, record: int) -> int:
    """A uniformly drawn flat item index of any record except `record`."""
    j = int(rng.integers(self.total - self.counts[record]))
    return j + int(self.counts[record]) if j >= self.starts[record] else j


@dataclasses.dataclass(frozen=True)
class SplitData:
  """One built split: random-access records plus the item index of each task.

  Attributes:
    records: `records[i]` -> dict of numpy arrays / bytes for record i.
    items: task -> its `ItemIndex` (from the per-record item counts saved by `build`).
    metadata: the dataset's metadata dict (e.g. `answer_vocab` for VQA).
    name: "<dataset>/<config>:<split>" for messages.
    caption_records: random access to each record's captions alone (JSON), or None.
  """
  records: object
  items: Dict[str, ItemIndex]
  metadata: Dict
  name: str
  caption_records: Optional[object] = None

  def __len__(self) -> int:
    return len(self.records)

  def task_items(self, task: str) -> ItemIndex:
    if task not in self.items:
      raise KeyError(f"{self.name} has no {task!r} items (it has {sorted(self.items)})")
    return self.items[task]

  def caption(self, record: int, item: int) -> str:
    """Caption `item` of `record`, read from the side file when the build wrote one."""
    if self.caption_records is not None:
      return json.loads(self.caption_records[record])[item]
    value = self.records[record]["captions"][item]
    return value.decode() if isinstance(value, bytes) else str(value)


def dataset_dir(name: str, data_dir: str) -> str:
  """Folder of the newest built version of `name` ("dataset" or "dataset/config"; as in TFDS,
  a name without a config means the builder's default config, "default" for ours)."""
  base = epath.Path(data_dir) / name
  if "/" not in name and (base / "default").is_dir():
    base = base / "default"
  versions = sorted((p for p in base.iterdir() if (p / "dataset_info.json").exists()),
                    key=lambda p: tfds.core.Version(p.name)) if base.exists() else []
  if not versions:
    raise FileNotFoundError(f"no built dataset {name} under {data_dir} (build it first; see "
                            "vilbert_jax/data/README.md)")
  return os.fspath(versions[-1])


def open_split(name: str, data_dir: str, split: str) -> SplitData:
  """Opens a built split for random access (no TensorFlow).

  Raises:
    UnsafeDatasetError: if its features.json names a feature class TFDS would import.
    CorruptRecordError: if a shard file is truncated (its last record cannot be read); later
      reads of a corrupted record raise it too, naming the file and record.
  """
  folder = dataset_dir(name, data_dir)
  check_feature_classes(folder)
  builder = tfds.builder_from_directory(folder)
  if split not in builder.info.splits:
    raise KeyError(f"{name} under {data_dir} has no split {split!r}; it has "
                   f"{sorted(builder.info.splits)}")
  metadata = dict(builder.info.metadata or {})
  label = f"{name}:{split}"
  split_info = builder.info.splits[split]
  records_source = CheckedRecords(builder.as_data_source(split=split),
                                  zip(map(os.fspath, split_info.filepaths),
                                      split_info.shard_lengths), label)
  records_source.check_shard_ends()
  counts = metadata.get("item_counts", {}).get(split)
  if counts is None:  # Built by TFDS's own download_and_prepare: count by reading records.
    logging.warning("%s has no item counts in its metadata; reading all %d records to count "
                    "items (build with vilbert_jax to avoid this)", label, len(records_source))
    counts = {}
    for i in range(len(records_source)):
      for task, n in records.item_counts(records_source[i]).items():
        counts.setdefault(task, []).append(n)
  items = {task: ItemIndex(np.asarray(c, np.int64), f"{label} ({task})")
           for task, c in counts.items() if sum(c)}
  side_file = captions_path(builder.data_dir, builder.name, split)
  captions = None
  if os.path.exists(side_file):
    import grain.python as grain  # pylint: disable=import-outside-toplevel  (grain imports JAX)
    side = grain.ArrayRecordDataSource([side_file])
    captions = CheckedRecords(side, [(side_file, len(side))], f"{label} captions")
    captions.check_shard_ends()
  return SplitData(records_source, items, metadata, label, captions)
