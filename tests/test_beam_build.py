"""Beam builds equal single-process builds: every builder, every feature-store format, bad rows.

Needs apache-beam, which needs protobuf<7: scripts/test.sh runs this file in the environment
made from requirements-beam.txt (skipped where Beam is not installed).
"""
import json
import os
import pickle
import re
import subprocess
import sys
import threading

import numpy as np
import pytest

pytest.importorskip("apache_beam")

from array_record.python import array_record_module  # noqa: E402
from etils import epath  # noqa: E402

from data_fixtures import random_record  # noqa: E402
from test_builders_real import C, D, _json, _tsv, _vqa_files  # noqa: E402
from test_data_features import _original_pickle, _write_lmdb  # noqa: E402
from tfds_builders.build import make_builder  # noqa: E402
from vilbert_jax.data import beam_build, records, tfds_io  # noqa: E402
from vilbert_jax.data.features import FeatureStoreError, encode_tsv_line  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IN_PROCESS = beam_build.pipeline_options("local", 1)


def _both(tmp_path, name, manual, records_per_shard=2, profile=None, **overrides):
  """Builds `name` single-process and with Beam; returns both dataset folders."""
  single = make_builder(name, str(tmp_path / "single"), **overrides)
  a = tfds_io.build(single, str(manual) if manual else None)
  args = beam_build.BuilderArgs(name, str(tmp_path / "beam"), None,
                                overrides.pop("skip_bad_rows", False), tuple(overrides.items()))
  b = beam_build.build(args, str(manual) if manual else None, IN_PROCESS, records_per_shard,
                       profile)
  return a, b


def _records(folder):
  """{split: every record's bytes in order}, {split: captions side file or None}."""
  info = json.loads((epath.Path(folder) / "dataset_info.json").read_text())
  out, captions = {}, {}
  for split in info["splits"]:
    n = len(split["shardLengths"])
    name = split["name"]
    out[name] = []
    for i in range(n):
      path = os.path.join(folder, f"{info['name']}-{name}.array_record-{i:05d}-of-{n:05d}")
      reader = array_record_module.ArrayRecordReader(path)
      assert reader.writer_options_string().find("uncompressed") >= 0
      out[name] += reader.read_all()
      reader.close()
    side = tfds_io.captions_path(folder, info["name"], name)
    captions[name] = (array_record_module.ArrayRecordReader(side).read_all()
                      if os.path.exists(side) else None)
  return out, captions


def _assert_equal(a, b):
  records_a, captions_a = _records(a)
  records_b, captions_b = _records(b)
  assert {s: len(r) for s, r in records_a.items()} == {s: len(r) for s, r in records_b.items()}
  assert records_a == records_b
  assert captions_a == captions_b
  metadata = lambda d: json.loads((epath.Path(d) / "metadata.json").read_text())
  assert metadata(a) == metadata(b)
  assert not [n for n in os.listdir(b) if "beam" in n]  # plans and parts are gone
  return records_a


def _lmdb(path, records):
  _write_lmdb(path, [(r.image_id.encode(), _original_pickle(r)) for r in records] +
              [(b"keys", pickle.dumps([r.image_id.encode() for r in records], protocol=2))])


def test_conceptual_captions_tsv(tmp_path):
  manual = tmp_path / "cc"
  manual.mkdir()
  _tsv(manual / "features_train.tsv", range(7))
  _json(manual / "captions_train.json", {str(i): f"caption {i}" for i in (3, 1, 0, 2, 6, 5, 4)})
  (manual / "captions_validation.tsv").write_text("8\tA red bus\n8\ta bus on a road\n")
  _tsv(manual / "features_validation.tsv", [8])
  profile = {}
  a, b = _both(tmp_path, "vilbert_conceptual_captions", manual, profile=profile, feature_dim=D,
               cls_prob_width=C, float16=True)
  records = _assert_equal(a, b)
  assert len(records["train"]) == 7 and len(records["validation"]) == 1
  info = json.loads((epath.Path(b) / "dataset_info.json").read_text())
  assert [s["shardLengths"] for s in info["splits"]] == [["2", "2", "2", "1"], ["1"]]
  # Where the time went: shards ran in this process (1 worker), inside the pipeline phase.
  assert set(profile) == {f"{p}_{m}" for p in ("plan", "pipeline", "finish")
                          for m in ("wall", "cpu")} | {"pipeline_children_cpu", "shard_cpu"}
  assert 0 < profile["shard_cpu"] <= profile["pipeline_cpu"] + 0.01
  assert all(v >= 0 for v in profile.values())


def test_vqa2_lmdb(tmp_path):
  manual = tmp_path / "vqa"
  manual.mkdir()
  _vqa_files(manual)
  rng = np.random.default_rng(1)
  _lmdb(manual / "features_trainval.lmdb",
        [random_record(rng, str(i), feature_dim=D, num_classes=C) for i in (100, 101, 102, 103)])
  _lmdb(manual / "features_test.lmdb", [random_record(rng, "200", feature_dim=D)])
  a, b = _both(tmp_path, "vilbert_vqa2", manual, feature_dim=D, minval_questions=1,
               min_answer_count=1)
  assert {s: len(r) for s, r in _assert_equal(a, b).items()} == {
      "trainval": 3, "minval": 1, "test_dev": 1}


def test_flickr30k_npz_folder_with_hard_negatives(tmp_path):
  manual = tmp_path / "flickr"
  (manual / "features").mkdir(parents=True)
  ids = [f"{1000 + i}" for i in range(7)]
  splits = ["train", "train", "restval", "train", "val", "test", "train"]
  _json(manual / "dataset_flickr30k.json", {"images": [
      {"filename": f"{i}.jpg", "split": s, "sentences": [{"raw": f"caption {k} of {i}"}
                                                          for k in range(5)]}
      for i, s in zip(ids, splits)]})
  rng = np.random.default_rng(2)
  for image_id in ids:
    r = random_record(rng, image_id, feature_dim=D)
    np.savez(manual / "features" / f"{image_id}.npz", features=r.features, boxes=r.boxes,
             image_w=r.image_w, image_h=r.image_h)
  a, b = _both(tmp_path, "vilbert_flickr30k", manual, feature_dim=D, num_hard_negatives=2)
  assert len(_assert_equal(a, b)["train"]) == 5


def test_refcoco_plus_tsv_folder(tmp_path):
  manual = tmp_path / "refcoco+"
  (manual / "features").mkdir(parents=True)
  _tsv(manual / "features" / "part0.tsv", [7, 8])
  _tsv(manual / "features" / "part1.tsv", [9], seed=1)
  _json(manual / "instances.json", {"images": [], "annotations": [
      {"id": 70 + i, "image_id": i, "bbox": [1, 2, 30, 40]} for i in (7, 8, 9)]})
  refs = [{"ref_id": i, "ann_id": 70 + i, "image_id": i, "split": s,
           "sentences": [{"sent": f"thing {i}"}, {"sent": f"the thing {i}"}]}
          for i, s in ((9, "train"), (7, "train"), (8, "testA"))]
  with open(manual / "refs(unc).p", "wb") as f:
    pickle.dump(refs, f, protocol=2)
  a, b = _both(tmp_path, "vilbert_refcoco_plus", manual, feature_dim=D)
  assert {s: len(r) for s, r in _assert_equal(a, b).items()} == {"train": 2, "testA": 1}


def test_vcr_npy_dicts(tmp_path):
  manual = tmp_path / "vcr"
  (manual / "features").mkdir(parents=True)
  item = {"objects": ["person", "dog"], "question": ["Why", [0], "?"],
          "answer_choices": [["a"], ["b"], ["c"], [[1]]], "answer_label": 0,
          "rationale_choices": [["d"], ["e"], ["f"], ["g"]], "rationale_label": 2}
  (manual / "val.jsonl").write_text("\n".join(
      json.dumps({**item, "img_id": f"val-{i % 3}"}) for i in range(5)) + "\n")
  rng = np.random.default_rng(3)
  for i in range(3):
    r = random_record(rng, f"val-{i}", feature_dim=D)
    np.save(manual / "features" / f"val-{i}.npy",
            {"features": r.features, "boxes": r.boxes, "image_w": 640, "image_h": 480})
  a, b = _both(tmp_path, "vilbert_vcr", manual, feature_dim=D)
  assert len(_assert_equal(a, b)["validation"]) == 3


def test_synthetic_scenes(tmp_path):
  a, b = _both(tmp_path, "vilbert_synthetic_scenes", None, records_per_shard=16,
               feature_dim=8, num_train=40, num_validation=10, num_test=10,
               num_hard_negatives=5)
  assert {s: len(r) for s, r in _assert_equal(a, b).items()} == {
      "train": 40, "validation": 10, "test": 10}


def test_each_image_is_checked_once_by_the_worker(tmp_path, monkeypatch):
  """The worker checks each image (float16: an abs max over the features) once, not again
  when it makes the example; the planning pass checks none."""
  checked = []
  check = records.storage_problem
  monkeypatch.setattr(records, "storage_problem", lambda record, *a, **kw: checked.append(
      record.image_id) or check(record, *a, **kw))
  manual = tmp_path / "cc"
  manual.mkdir()
  _tsv(manual / "features_train.tsv", range(5))
  _json(manual / "captions_train.json", {str(i): f"caption {i}" for i in range(5)})
  beam_build.build(beam_build.BuilderArgs(
      "vilbert_conceptual_captions", str(tmp_path / "beam"), None, False,
      (("feature_dim", D), ("cls_prob_width", C), ("float16", True))), str(manual), IN_PROCESS, 2)
  assert sorted(checked) == ["0", "1", "2", "3", "4"]


def _bad_rows(manual, missing_first):
  """CC files with a bad TSV row (image 3) and an image without features (404)."""
  manual.mkdir()
  _tsv(manual / "features_train.tsv", [0, 1, 2])
  with open(manual / "features_train.tsv", "ab") as f:
    f.write(b"3\t640\t480\t2\tAAAA\tAAAA\n")
  _tsv(manual / "features_extra.tsv", [4, 5])
  with open(manual / "features_train.tsv", "ab") as f:
    f.write((manual / "features_extra.tsv").read_bytes())
  order = ["0", "404", "1", "2", "3", "4", "5"] if missing_first else [
      "0", "1", "2", "3", "4", "404", "5"]
  _json(manual / "captions_train.json", {i: f"caption {i}" for i in order})


@pytest.mark.parametrize("missing_first", [True, False])
def test_bad_rows_same_report_and_same_error(tmp_path, missing_first):
  manual = tmp_path / "cc"
  _bad_rows(manual, missing_first)
  opts = dict(feature_dim=D, cls_prob_width=C)
  a, b = _both(tmp_path, "vilbert_conceptual_captions", manual, skip_bad_rows=True, **opts)
  _assert_equal(a, b)
  skipped = json.loads((epath.Path(b) / "metadata.json").read_text())["skipped_rows"]
  assert len(skipped) == 2 and ("404" in skipped[0]) == missing_first
  errors = []
  for builder in ("single", "beam"):
    with pytest.raises((FeatureStoreError, KeyError)) as e:
      if builder == "single":
        tfds_io.build(make_builder("vilbert_conceptual_captions", str(tmp_path / "s2"), **opts),
                      str(manual))
      else:
        beam_build.build(beam_build.BuilderArgs(
            "vilbert_conceptual_captions", str(tmp_path / "b2"), None, False,
            tuple(opts.items())), str(manual), IN_PROCESS, 2)
    errors.append((type(e.value), str(e.value)))
  assert errors[0] == errors[1]
  assert errors[0][0] is (KeyError if missing_first else FeatureStoreError)
  for d in ("s2", "b2"):  # nothing that looks complete
    assert not list((tmp_path / d).rglob("dataset_info.json"))


def test_planning_error_ends_the_started_pipeline(tmp_path):
  """The pipeline starts before the planner: a planner that fails before planning anything
  (no manual dir) still raises its own error, ends the pipeline and leaves nothing behind."""
  threads = threading.active_count()
  args = beam_build.BuilderArgs("vilbert_conceptual_captions", str(tmp_path / "b"), None, False,
                                (("feature_dim", D),))
  with pytest.raises(AssertionError, match="missing does not exist"):  # TFDS's check
    beam_build.build(args, str(tmp_path / "missing"), IN_PROCESS)
  assert threading.active_count() == threads
  assert not [p for p in (tmp_path / "b").rglob("*")
              if p.name.startswith("incomplete.") or p.name == "dataset_info.json"]


def _documented_command(index: int = 0):
  """Command `index` of vilbert_jax/data/README.md's Beam section (0: the build, 1: the
  throughput benchmark), continuation lines joined."""
  text = open(os.path.join(ROOT, "vilbert_jax", "data", "README.md")).read()
  section = text[text.index("## Distributed builds"):]
  block = re.findall(r"```bash\n(.*?)```", section, re.S)[index]
  return " ".join(block.replace("\\\n", " ").split())


def test_documented_command_two_worker_processes(tmp_path):
  """The README's command as written (paths substituted): two worker processes, paper widths."""
  manual = tmp_path / "cc"
  manual.mkdir()
  rng = np.random.default_rng(4)
  with open(manual / "features_train.tsv", "wb") as f:
    for i in range(5):
      f.write(encode_tsv_line(random_record(rng, str(i), num_boxes=4, feature_dim=2048,
                                            num_classes=1601)))
  _json(manual / "captions_train.json", {str(i): f"caption {i}" for i in (4, 0, 3, 1, 2)})
  single = tfds_io.build(make_builder("vilbert_conceptual_captions", str(tmp_path / "single"),
                                      float16=True), str(manual))
  command = _documented_command()
  assert command == ("python -m tfds_builders.build vilbert_conceptual_captions --manual_dir "
                     "/data/cc --data_dir /data/tfds --float16 --beam_runner local "
                     "--beam_workers 2")
  command = command.replace("/data/cc", str(manual)).replace("/data/tfds", str(tmp_path / "b"))
  proc = subprocess.run(command.replace("python", sys.executable, 1).split(), cwd=ROOT,
                        capture_output=True, text=True, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "train: 5 records" in proc.stdout
  built = proc.stdout.split("built ")[1].split()[0]
  _assert_equal(single, built)


def test_documented_throughput_benchmark(tmp_path):
  """The README's benchmark command as written, 12 images instead of 8,000: every build it
  times prints its row and its CPU by phase."""
  command = _documented_command(1)
  assert command == ("PYTHONPATH=. .venv-beam/bin/python scripts/benchmark_build.py "
                     "--num_images 8000 --work_dir /tmp/bench8000")
  args = command.split()[2:] + ["--num_images", "12", "--records_per_shard", "4"]
  args[args.index("/tmp/bench8000")] = str(tmp_path / "bench")
  proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                        env={**os.environ, "PYTHONPATH": "."}, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  rows = [line.split(" | ") for line in proc.stdout.splitlines() if line.startswith("| ")]
  labels = [row[0].lstrip("| ") for row in rows]
  assert labels.count("single process") == 1, proc.stdout
  assert labels.count("beam, 1 worker") == 2 and labels.count("beam, 2 workers") == 2
  single = next(row for row in rows if row[0] == "| single process")
  assert float(single[2]) > 0 and single[3] == "1.00x"  # examples/s, its own ratio
  # Inputs kept in --work_dir for the next run of the same size.
  assert sum(1 for _ in open(tmp_path / "bench" / "manual" / "captions_train.tsv")) == 12


def test_cluster_options_pass_through():
  options = beam_build.pipeline_options("DataflowRunner", 8, beam_build.parse_pipeline_options(
      "--project=p --region=r --temp_location='gs://b/tmp dir'"))
  assert options == ["--runner=DataflowRunner", "--project=p", "--region=r",
                     "--temp_location=gs://b/tmp dir"]
  assert "--direct_num_workers=3" in beam_build.pipeline_options("local", 3)
