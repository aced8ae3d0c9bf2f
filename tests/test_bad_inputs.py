"""The bad-input corpus: each case written in its real format gets a named error or a counted skip.

A build-time error names the file, the row or key and the image id, and leaves nothing that
looks built (no dataset_info.json, no half-written folder); with `skip_bad_rows` the row is
left out and listed in the dataset's metadata (`skipped_rows`). The table of cases and what
each gets is in vilbert_jax/data/README.md ("Bad input").
"""
import dataclasses
import json
import pathlib
import pickle
import re
import shutil
import sys

import lmdb
import msgpack
import numpy as np
import pytest

from data_fixtures import random_record, write_json, write_tsv
from vilbert_jax.data import inspect as data_inspect
from vilbert_jax.data import records as records_lib
from vilbert_jax.data import tfds_io
from vilbert_jax.data.build import build_dataset
from vilbert_jax.data.features import FeatureStoreError, encode_tsv_line, open_feature_store

D, C = 8, 5  # feature width and class count of every store here
CC = "vilbert_conceptual_captions"


def _manual(tmp_path, ids=(1, 2, 3)) -> pathlib.Path:
  """A Conceptual Captions manual dir (captions only; each test writes the features)."""
  manual = tmp_path / "cc"
  manual.mkdir()
  write_json(manual / "captions_train.json", {str(i): f"caption {i}" for i in ids})
  return manual


def _build(tmp_path, manual, **kw) -> str:
  return build_dataset(CC, str(tmp_path / "tfds"), str(manual), feature_dim=D,
                       cls_prob_width=C, **kw)


def _nothing_looks_built(tmp_path) -> None:
  data_dir = tmp_path / "tfds"
  assert not list(data_dir.rglob("dataset_info.json"))
  assert not list(data_dir.rglob("incomplete.*")) and not list(data_dir.rglob("*.array_record*"))


def _fails_then_skips(tmp_path, manual, message: str, **kw) -> None:
  """The build stops with `message` (regex) and leaves nothing; skipping counts the row."""
  with pytest.raises(FeatureStoreError, match=message):
    _build(tmp_path, manual, **kw)
  _nothing_looks_built(tmp_path)
  name = _build(tmp_path, manual, skip_bad_rows=True, **kw)
  split = tfds_io.open_split(name, str(tmp_path / "tfds"), "train")
  assert len(split) == 2  # of the 3 images
  skipped, = split.metadata["skipped_rows"]
  assert re.search(message, skipped), skipped


def _records(n=3, seed=0, **kw):
  rng = np.random.default_rng(seed)
  return [random_record(rng, str(i), feature_dim=D, num_classes=C, **kw) for i in range(1, n + 1)]


def _write_tsv_records(path, records) -> None:
  with open(path, "wb") as f:
    for r in records:
      f.write(encode_tsv_line(r))


# ---------------------------------------------------------------------------------------------
# A built dataset's shards (read side)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  """A built tiny dataset: (data_dir, dataset name), to be copied by each test."""
  tmp = tmp_path_factory.mktemp("built")
  manual = _manual(tmp, ids=range(1, 9))
  write_tsv(manual / "features_train.tsv", range(1, 9), feature_dim=D, num_classes=C)
  return tmp / "tfds", _build(tmp, manual)


def _copy(built, tmp_path):
  data_dir, name = built
  shutil.copytree(data_dir, tmp_path / "tfds")
  shard, = (tmp_path / "tfds").rglob(f"{CC}-train.array_record-*")
  return str(tmp_path / "tfds"), name, shard


def test_truncated_shard_is_a_named_error_at_open(built, tmp_path):
  data_dir, name, shard = _copy(built, tmp_path)
  shard.write_bytes(shard.read_bytes()[:shard.stat().st_size // 2])
  with pytest.raises(tfds_io.CorruptRecordError,
                     match=rf"{CC}.*:train record 7 \(.*{shard.name} record 7\).*truncated"):
    tfds_io.open_split(name, data_dir, "train")


def test_corrupted_record_is_a_named_error_when_read(built, tmp_path):
  data_dir, name, shard = _copy(built, tmp_path)
  data = bytearray(shard.read_bytes())
  data[200:400] = bytes(b ^ 0xFF for b in data[200:400])  # inside the first record's chunk
  shard.write_bytes(bytes(data))
  split = tfds_io.open_split(name, data_dir, "train")  # the last record is intact
  with pytest.raises(tfds_io.CorruptRecordError, match=rf"{shard.name} record 0\).*corrupted"):
    split.records[0]


def test_feature_class_that_tfds_would_import_is_refused(built, tmp_path, monkeypatch):
  data_dir, name, shard = _copy(built, tmp_path)
  marker = tmp_path / "imported"
  module = tmp_path / "modules" / "dataset_feature_payload.py"
  module.parent.mkdir()
  module.write_text(f"open({str(marker)!r}, 'w').close()\n")
  monkeypatch.syspath_prepend(str(module.parent))
  features = shard.parent / "features.json"
  spec = json.loads(features.read_text())
  spec["featuresDict"]["features"]["boxes"]["pythonClassName"] = "dataset_feature_payload.Box"
  features.write_text(json.dumps(spec))
  message = r"features.json names feature classes \['dataset_feature_payload.Box'\]"
  with pytest.raises(tfds_io.UnsafeDatasetError, match=message):
    tfds_io.open_split(name, data_dir, "train")
  with pytest.raises(tfds_io.UnsafeDatasetError):
    data_inspect.main(["dataset", name, "--data_dir", data_dir])
  assert not marker.exists() and "dataset_feature_payload" not in sys.modules


def test_tfds_own_feature_classes_open(built):
  data_dir, name = built
  assert len(tfds_io.open_split(name, str(data_dir), "train")) == 8


# ---------------------------------------------------------------------------------------------
# LMDB / msgpack values of the wrong type or shape


def _msgpack_numpy(a, **changes):
  value = {b"nd": True, b"type": a.dtype.str, b"shape": list(a.shape), b"data": a.tobytes()}
  value.update({k.encode(): v for k, v in changes.items()})
  return value


def _msgpack_record(r, **fields):
  value = {"image_id": r.image_id, "image_w": r.image_w, "image_h": r.image_h,
           "num_boxes": r.num_boxes, "boxes": _msgpack_numpy(r.boxes),
           "features": _msgpack_numpy(r.features), "cls_prob": _msgpack_numpy(r.cls_prob)}
  value.update(fields)
  return msgpack.packb(value)


def _pickled_record(r, **fields):
  value = {"image_id": int(r.image_id), "image_w": r.image_w, "image_h": r.image_h,
           "num_boxes": r.num_boxes, "boxes": r.boxes, "features": r.features,
           "cls_prob": r.cls_prob}
  value.update(fields)
  return pickle.dumps(value, protocol=2)


def _write_lmdb(path, values) -> None:
  env = lmdb.open(str(path), map_size=1 << 24)
  with env.begin(write=True) as txn:
    for key, value in values.items():
      txn.put(key, value)
  env.close()


_R2 = _records()[1]  # the bad record is image 2 in each case
BAD_LMDB_VALUES = {
    "msgpack-numpy of strings": (
        _msgpack_record(_R2, features=_msgpack_numpy(np.array(["ab"] * 96))),
        r"features holds <U2 values, not numbers"),
    "msgpack-numpy of objects": (
        _msgpack_record(_R2, features=_msgpack_numpy(_R2.features, type="|O")),
        r"features is not a valid msgpack-numpy array \(type '\|O'"),
    "msgpack-numpy shape disagrees with its data": (
        _msgpack_record(_R2, features=_msgpack_numpy(_R2.features, shape=[12, 9])),
        r"features is not a valid msgpack-numpy array .*shape \[12, 9\]"),
    "msgpack-numpy with fewer rows than num_boxes": (
        _msgpack_record(_R2, features=_msgpack_numpy(_R2.features[:5])),
        r"features has 5 rows but num_boxes is 12"),
    "msgpack list of ragged lists": (
        _msgpack_record(_R2, boxes=[[1.0, 2.0, 3.0, 4.0], [1.0]] * 6),
        r"boxes is not a rectangular array"),
    "pickled object array": (
        _pickled_record(_R2, features=np.array([None] * 96, dtype=object)),
        r"features holds object values, not numbers"),
}


@pytest.mark.parametrize("case", BAD_LMDB_VALUES)
def test_lmdb_value_of_wrong_type_or_shape_names_the_key_and_is_skippable(tmp_path, case):
  value, message = BAD_LMDB_VALUES[case]
  r1, _, r3 = _records()
  manual = _manual(tmp_path)
  _write_lmdb(manual / "features_train.lmdb", {b"1": _msgpack_record(r1), b"2": value,
                                               b"3": _pickled_record(r3)})
  _fails_then_skips(tmp_path, manual,
                    rf"features_train.lmdb key 2 \(image_id 2\): {message}")


# ---------------------------------------------------------------------------------------------
# cls_prob, float16 overflow (TSV rows)


def _wrong_width(records):
  records[1] = random_record(np.random.default_rng(1), "2", feature_dim=D, num_classes=C - 1)


def _nan_cls_prob(records):
  records[2].cls_prob[3, 1] = np.nan


def _no_cls_prob(records):
  records[0] = dataclasses.replace(records[0], cls_prob=None)


def _beyond_float16(records):
  records[1].features[0, 0] = 1e5  # finite in float32, inf in float16


def _inf_cls_prob(records):
  records[2].cls_prob[0, 0] = np.inf


@pytest.mark.parametrize("spoil, message, build_kw", [
    (_wrong_width, r"features_train.tsv row 2 \(image_id 2\): cls_prob has 4 classes, the "
     r"dataset config expects 5", {}),
    (_nan_cls_prob, r"features_train.tsv row 3 \(image_id 3\): cls_prob contains NaN or Inf",
     {}),
    (_no_cls_prob, r"features_train.tsv row 1 \(image_id 1\): the store has no cls_prob", {}),
    (_beyond_float16, r"features_train.tsv row 2 \(image_id 2\): features holds 1e\+05, "
     r"beyond float16's largest value 65504", {"float16": True}),
    # decoded in worker processes: the same names
    (_inf_cls_prob, r"features_train.tsv row 3 \(image_id 3\): cls_prob contains NaN or Inf",
     {"num_workers": 2}),
], ids=["cls_prob_of_wrong_width", "cls_prob_with_nan", "missing_cls_prob", "float16_overflow",
        "decoded_in_workers"])
def test_bad_row_names_file_row_and_image(tmp_path, spoil, message, build_kw):
  records = _records()
  spoil(records)
  manual = _manual(tmp_path)
  _write_tsv_records(manual / "features_train.tsv", records)
  _fails_then_skips(tmp_path, manual, message, **build_kw)


def test_float32_keeps_what_float16_cannot(tmp_path):
  records = _records()
  _beyond_float16(records)
  manual = _manual(tmp_path)
  _write_tsv_records(manual / "features_train.tsv", records)
  name = _build(tmp_path, manual)
  assert tfds_io.open_split(name, str(tmp_path / "tfds"), "train").records[1][
      "features"][0, 0] == 1e5


def test_each_image_is_checked_once(tmp_path, monkeypatch):
  """`records.storage_problem` (an abs max over the features for float16) runs once per image:
  where the store is read, not again when the example is made."""
  checked = []
  check = records_lib.storage_problem
  monkeypatch.setattr(records_lib, "storage_problem",
                      lambda record, *a, **kw: checked.append(record.image_id) or check(
                          record, *a, **kw))
  manual = _manual(tmp_path)
  _write_tsv_records(manual / "features_train.tsv", _records())
  _build(tmp_path, manual, float16=True)
  assert sorted(checked) == ["1", "2", "3"]


# ---------------------------------------------------------------------------------------------
# Duplicate image ids: always an error (which of the two records is right cannot be told)


def _fails_even_when_skipping(tmp_path, manual, message: str) -> None:
  for skip in (False, True):
    with pytest.raises(FeatureStoreError, match=message):
      _build(tmp_path, manual, skip_bad_rows=skip)
    _nothing_looks_built(tmp_path)


def test_duplicate_image_id_in_a_tsv(tmp_path, capsys):
  r1, r2, r3 = _records()
  manual = _manual(tmp_path)
  _write_tsv_records(manual / "features_train.tsv", [r1, r2, r3, r2])
  message = (r"features_train.tsv row 4 \(image_id 2\): duplicate image id, also at "
             r"features_train.tsv row 2")
  _fails_even_when_skipping(tmp_path, manual, message)
  assert data_inspect.main(["store", str(manual / "features_train.tsv")]) == 1
  assert "duplicate image id" in capsys.readouterr().out


def test_duplicate_image_id_across_the_files_of_a_store(tmp_path):
  r1, r2, r3 = _records()
  manual = _manual(tmp_path)
  (manual / "features_train").mkdir()
  _write_tsv_records(manual / "features_train" / "part0.tsv", [r1, r2])
  _write_tsv_records(manual / "features_train" / "part1.tsv", [r3, r1])
  _fails_even_when_skipping(
      tmp_path, manual,
      r"part1.tsv row 2 \(image_id 1\): duplicate image id, also at part0.tsv row 1")


def test_duplicate_image_id_in_npz_folder_and_lmdb_keys(tmp_path):
  r1, = _records(1)
  folder = tmp_path / "npz"
  folder.mkdir()
  fields = dict(features=r1.features, boxes=r1.boxes, image_w=640, image_h=480)
  np.savez(folder / "1.npz", **fields)
  np.save(folder / "1.npy", fields)  # the same image as a .npy holding a dict
  with pytest.raises(FeatureStoreError, match=r"1.npz \(image_id 1\): duplicate image id, also "
                     r"at 1.npy"):
    open_feature_store(str(folder))
  _write_lmdb(tmp_path / "f.lmdb", {b"1": _pickled_record(r1),
                                    b"keys": pickle.dumps([b"1", b"1"], protocol=2)})
  with pytest.raises(FeatureStoreError, match=r"f.lmdb 'keys' entry 1 \(image_id 1\): "
                     r"duplicate image id, also at f.lmdb 'keys' entry 0"):
    open_feature_store(str(tmp_path / "f.lmdb"))


def test_build_command_reports_the_skipped_row(tmp_path, capsys):
  from tfds_builders.build import main as build_main  # pylint: disable=g-import-not-at-top
  r1, r2, r3 = _records()
  manual = _manual(tmp_path)
  _write_lmdb(manual / "features_train.lmdb", {
      b"1": _msgpack_record(r1), b"3": _pickled_record(r3),
      b"2": _msgpack_record(r2, features=_msgpack_numpy(r2.features, shape=[12, 9]))})
  argv = [CC, "--manual_dir", str(manual), "--data_dir", str(tmp_path / "tfds"),
          "--feature_dim", str(D), "--cls_prob_width", str(C), "--skip_bad_rows"]
  assert build_main(argv) == 0
  out = capsys.readouterr().out
  assert "train: 2 records" in out
  assert "skipped: features_train.lmdb key 2 (image_id 2): features is not a valid" in out
