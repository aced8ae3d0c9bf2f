"""Feature stores: TSV / LMDB / npz round trips, format detection, errors naming file and row."""
import base64
import os
import pickle

import lmdb
import msgpack
import numpy as np
import pytest

from data_fixtures import assert_same_record, random_record
from vilbert_jax.data import store_reader
from vilbert_jax.data.features import (FeatureStoreError, TsvFeatureStore, UnsafePickleError,
                                       encode_tsv_line, open_feature_store, safe_loads)


def _records(n=4, **kw):
  rng = np.random.default_rng(0)
  return [random_record(rng, str(100 + i), num_boxes=10 + i, **kw) for i in range(n)]


def _write_tsv(path, records, lines=()):
  with open(path, "wb") as f:
    for r in records:
      f.write(encode_tsv_line(r))
    for line in lines:
      f.write(line)


def test_tsv_round_trip_random_access_and_streaming(tmp_path):
  records = _records()
  path = tmp_path / "feats.tsv"
  _write_tsv(path, records)
  store = open_feature_store(str(path), feature_dim=8)
  assert len(store) == 4 and "102" in store and "7" not in store
  assert_same_record(records[2], store["102"])
  assert_same_record(records[2], store[102])
  for a, b in zip(records, store):
    assert_same_record(a, b)


def test_tsv_folder_and_optional_cls_prob(tmp_path):
  rec = _records(1)[0]
  no_prob = type(rec)(rec.image_id, rec.features, rec.boxes, rec.image_w, rec.image_h, None)
  _write_tsv(tmp_path / "a.tsv", [no_prob])
  _write_tsv(tmp_path / "b.tsv", _records(3)[1:])
  store = open_feature_store(str(tmp_path))
  assert store.keys() == ["100", "101", "102"]
  assert store["100"].cls_prob is None


def _line(image_id="9", w=640, h=480, n=2, boxes=None, feats=None):
  b64 = lambda a: base64.b64encode(np.asarray(a, np.float32).tobytes())
  boxes = b64(np.ones((n, 4)) if boxes is None else boxes)
  feats = b64(np.ones((n, 8)) if feats is None else feats)
  return b"\t".join([image_id.encode(), str(w).encode(), str(h).encode(), str(n).encode(),
                     boxes, feats]) + b"\n"


@pytest.mark.parametrize("bad, message", [
    (_line(feats=np.ones((2, 6))), "expected 8"),  # wrong feature width
    (_line(n=3, boxes=np.ones((2, 4)), feats=np.ones((2, 8))),  # num_boxes disagrees
     "boxes has 8 values, not a multiple of num_boxes=3"),
    (_line(feats=np.full((2, 8), np.nan)), "NaN or Inf"),
    (_line()[:-12] + b"\n", "not valid base64"),  # truncated base64
    (b"9\t640\t480\n", "columns"),
])
def test_tsv_errors_name_file_row_and_image(tmp_path, bad, message):
  path = tmp_path / "feats.tsv"
  _write_tsv(path, _records(2), [bad])
  store = open_feature_store(str(path), feature_dim=8)
  with pytest.raises(FeatureStoreError, match=message) as err:
    list(store)
  assert "feats.tsv row 3 (image_id 9)" in str(err.value)


def _index_by_lines(path):
  """The TSV index as reading the file line by line gives it: {id: (path, row, offset, length)}."""
  index, offset = {}, 0
  with open(path, "rb") as f:
    for row, line in enumerate(f, 1):
      if line.strip():
        index[line.split(b"\t", 1)[0].decode(errors="replace")] = (str(path), row, offset,
                                                                     len(line))
      offset += len(line)
  return index


@pytest.mark.parametrize("ending", [b"\n", b"\r\n"])
@pytest.mark.parametrize("last_newline", [True, False])
def test_tsv_index_of_awkward_files_equals_reading_lines(tmp_path, ending, last_newline):
  """The mapped index (`tsv.lines`) finds the same rows, offsets, lengths and ids as reading
  lines would: blank and whitespace-only lines, CRLF, a line starting with whitespace, an id
  that is not UTF-8, a line without a tab (its id is the whole line, newline included: it
  fails to parse later), no final newline, an empty file."""
  lines = [_line("1"), b"\n", b" \t \x0b\x0c\r\n", _line("22"), b"no-tab-here\n",
           b" 3\tx\n", b"\n\n", b"\xff" + _line("5")[1:], _line("4")]
  lines = [line[:-1] + ending if line.strip() else line for line in lines]
  if not last_newline:
    lines[-1] = lines[-1].rstrip(b"\r\n")
  path = tmp_path / "feats.tsv"
  path.write_bytes(b"".join(lines))
  store = TsvFeatureStore([str(path)], feature_dim=8)
  expected = _index_by_lines(path)
  assert len(expected) == 6 and "no-tab-here" + ending.decode() in expected
  assert {k: store.location(k) for k in store.keys()} == expected
  assert store.keys() == list(expected)  # file order
  for image_id, line in (("1", lines[0]), ("22", lines[3]), ("\ufffd", lines[7]),
                         ("4", lines[8])):  # random access reads exactly the indexed line
    assert store.raw(image_id).payload == line
    assert store[image_id].features.shape == (2, 8)
  with pytest.raises(FeatureStoreError, match=r"feats.tsv row 5 \(image_id no-tab-here\)"):
    store["no-tab-here" + ending.decode()]
  empty = tmp_path / "empty.tsv"
  empty.write_bytes(b"")
  assert TsvFeatureStore([str(empty)]).keys() == []


def test_unknown_image_id_names_the_store(tmp_path):
  path = tmp_path / "feats.tsv"
  _write_tsv(path, _records(1))
  with pytest.raises(KeyError, match="image_id 555 is not in .*feats.tsv"):
    open_feature_store(str(path))["555"]


def _write_lmdb(path, items):
  env = lmdb.open(str(path), map_size=1 << 26)
  with env.begin(write=True) as txn:
    for key, value in items:
      txn.put(key, value)
  env.close()


def _original_pickle(r):
  """The vilbert-multi-task layout: pickled dict, arrays as base64 strings."""
  b64 = lambda a: base64.b64encode(a.tobytes()).decode()
  return pickle.dumps({"image_id": int(r.image_id), "image_h": r.image_h, "image_w": r.image_w,
                       "num_boxes": r.num_boxes, "boxes": b64(r.boxes),
                       "features": b64(r.features), "cls_prob": b64(r.cls_prob)}, protocol=2)


def test_lmdb_pickle_msgpack_and_keys_list(tmp_path):
  records = _records(3)
  r0, r1, r2 = records
  msgpack_numpy = lambda a: {b"nd": True, b"type": "<f4", b"shape": list(a.shape),
                             b"data": a.tobytes()}
  items = [
      (b"100", _original_pickle(r0)),
      (b"101", msgpack.packb([r1.image_id, r1.image_w, r1.image_h, r1.num_boxes,
                              r1.boxes.tobytes() and base64.b64encode(r1.boxes.tobytes()),
                              base64.b64encode(r1.features.tobytes()),
                              base64.b64encode(r1.cls_prob.tobytes())])),
      (b"102", msgpack.packb({"image_id": r2.image_id, "image_w": r2.image_w,
                              "image_h": r2.image_h, "num_boxes": r2.num_boxes,
                              "boxes": msgpack_numpy(r2.boxes),
                              "features": msgpack_numpy(r2.features),
                              "cls_prob": msgpack_numpy(r2.cls_prob)})),
      (b"keys", pickle.dumps([b"100", b"101", b"102"], protocol=2)),
  ]
  _write_lmdb(tmp_path / "feats.lmdb", items)
  store = open_feature_store(str(tmp_path / "feats.lmdb"), feature_dim=8)
  assert store.keys() == ["100", "101", "102"]
  for a, b in zip(records, store):
    assert_same_record(a, b)


class _Exploit:
  def __reduce__(self):
    return (os.system, ("touch pwned_by_pickle",))


def test_malicious_pickle_is_refused_and_never_runs(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  payload = pickle.dumps({"image_id": 1, "features": _Exploit()}, protocol=2)
  with pytest.raises(UnsafePickleError, match="posix.system|os.system"):
    safe_loads(payload)
  _write_lmdb(tmp_path / "evil.lmdb", [(b"1", payload)])
  with pytest.raises(FeatureStoreError, match="evil.lmdb key 1: refusing to load"):
    open_feature_store(str(tmp_path / "evil.lmdb"))["1"]
  (tmp_path / "npy").mkdir()
  np.save(tmp_path / "npy" / "2.npy", np.array({"features": _Exploit()}, dtype=object),
          allow_pickle=True)
  with pytest.raises(FeatureStoreError, match="2.npy: refusing to load"):
    open_feature_store(str(tmp_path / "npy"))["2"]
  assert not (tmp_path / "pwned_by_pickle").exists()


def test_safe_loads_admits_arrays_and_plain_values():
  value = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": [1, "x", 2.5, None],
           "c": np.float32(3.0)}
  for protocol in (2, 4, 5):
    out = safe_loads(pickle.dumps(value, protocol=protocol))
    np.testing.assert_array_equal(out["a"], value["a"])
    assert out["b"] == value["b"] and out["c"] == 3.0


def test_npz_and_npy_folders(tmp_path):
  records = _records(2)
  for r in records[:1]:
    np.savez(tmp_path / f"{r.image_id}.npz", features=r.features, boxes=r.boxes,
             image_w=r.image_w, image_h=r.image_h, cls_prob=r.cls_prob)
  r = records[1]
  np.save(tmp_path / f"{r.image_id}.npy", np.array(
      {"features": r.features, "boxes": r.boxes, "image_w": r.image_w, "image_h": r.image_h,
       "cls_prob": r.cls_prob}, dtype=object), allow_pickle=True)
  store = open_feature_store(str(tmp_path))
  assert store.keys() == ["100", "101"]
  for a, b in zip(records, store):
    assert_same_record(a, b)
  np.savez(tmp_path / "7.npz", features=np.ones((2, 8)))
  with pytest.raises(FeatureStoreError, match=r"7.npz.*lacks arrays \['boxes'"):
    store = open_feature_store(str(tmp_path))["7"]


def test_unrecognised_paths(tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    open_feature_store(str(tmp_path / "missing"))
  (tmp_path / "x.txt").write_text("hi")
  with pytest.raises(FeatureStoreError, match="cannot tell the feature format"):
    open_feature_store(str(tmp_path))


def test_raw_records_decode_in_worker_processes(tmp_path):
  """LMDB and npz records cross process boundaries undecoded (parallel builds)."""
  records = _records(6)
  _write_lmdb(tmp_path / "feats.lmdb", [(r.image_id.encode(), _original_pickle(r))
                                        for r in records])
  skips = store_reader.SkipLog(allowed=True)
  store = open_feature_store(str(tmp_path / "feats.lmdb"), feature_dim=8)
  ids = [r.image_id for r in records] + ["404"]
  decoded = list(store_reader.images(store, ids, skips, num_workers=2))
  assert [i for i, _ in decoded] == ids[:-1]
  for a, (_, b) in zip(records, decoded):
    assert_same_record(a, b)
  assert skips.skipped == ["image_id 404 is not in " + str(tmp_path / "feats.lmdb")]
