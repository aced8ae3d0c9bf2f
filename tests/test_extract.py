"""From image files to feature stores: store writers, the extraction driver (resume, bad
images, devices, processes), and end to end to VQA answers with the tiny random detector."""
import importlib
import json
import os
import pathlib
import re
import shlex
import struct
import subprocess
import sys
import threading
import zlib

import jax
import numpy as np
import pytest
from PIL import Image, ImageDraw

from data_fixtures import assert_same_record, random_record
from tfds_builders.build import main as build_main
from train_utils import TINY
from vilbert_jax.convert.__main__ import main as convert_main
from vilbert_jax.data.features import (FeatureStoreError, RegionFeatures, open_feature_store,
                                       open_feature_writer, written_ids)
from vilbert_jax.detection.images import ImageError, load_image
from vilbert_jax.predict import Predictor

# The driver module (the package attribute `extract` is the detector function until it loads).
extraction = importlib.import_module("vilbert_jax.detection.extract")
ROOT = pathlib.Path(__file__).parents[1]
FORMATS = {"tsv": "feats.tsv", "lmdb": "feats.lmdb", "npz": "feats"}


# ----------------------------------------------------------------------------- writers
@pytest.mark.parametrize("fmt", FORMATS)
def test_writer_round_trips_and_appends(tmp_path, fmt):
  rng = np.random.default_rng(0)
  records = [random_record(rng, str(i), num_boxes=10 + i) for i in range(5)]
  no_prob = RegionFeatures("nop", records[0].features, records[0].boxes, 33, 44, None)
  path = str(tmp_path / FORMATS[fmt])
  with open_feature_writer(path) as writer:
    assert writer.done_ids == set()
    writer.write(records[:2])
    writer.write([no_prob])
  with open_feature_writer(path) as writer:  # Reopening appends after what is there.
    assert writer.done_ids == {"0", "1", "nop"}
    writer.write(records[2:])
  assert written_ids(path) == {"0", "1", "2", "3", "4", "nop"}
  store = open_feature_store(path, feature_dim=8)
  expected = {r.image_id: r for r in records + [no_prob]}
  assert sorted(store.keys()) == sorted(expected)
  for record in store:
    assert_same_record(expected[record.image_id], record)
  if fmt == "lmdb":  # The originals' pickled `keys` list, in write order.
    assert store.keys() == ["0", "1", "nop", "2", "3", "4"]


def test_writers_drop_what_a_killed_writer_left_half_written(tmp_path):
  rng = np.random.default_rng(1)
  records = [random_record(rng, str(i)) for i in range(3)]
  tsv = str(tmp_path / "feats.tsv")
  with open_feature_writer(tsv) as writer:
    writer.write(records[:2])
  with open(tsv, "ab") as f:  # A killed run's partial line.
    f.write(b"2\t640\t480\t12\tAAAA")
  assert written_ids(tsv) == {"0", "1"}
  with open_feature_writer(tsv) as writer:
    writer.write(records[2:])
  assert [r.image_id for r in open_feature_store(tsv)] == ["0", "1", "2"]
  folder = tmp_path / "npz"
  with open_feature_writer(str(folder)) as writer:
    writer.write(records[:1])
  (folder / "1.npz.partial").write_bytes(b"PK\x03")
  assert written_ids(str(folder)) == {"0"}
  open_feature_writer(str(folder)).close()
  assert sorted(os.listdir(folder)) == ["0.npz"]


def test_writer_refuses_an_output_of_another_kind(tmp_path):
  (tmp_path / "a.tsv").mkdir()
  with pytest.raises(FeatureStoreError, match="a TSV output must be a file"):
    open_feature_writer(str(tmp_path / "a.tsv"))
  (tmp_path / "x").write_text("")
  with pytest.raises(FeatureStoreError, match="is a file"):
    open_feature_writer(str(tmp_path / "x"))
  folder = tmp_path / "f"
  folder.mkdir()
  (folder / "old.tsv").write_text("")
  with pytest.raises(FeatureStoreError, match="holds an LMDB or TSV store"):
    open_feature_writer(str(folder))


# ----------------------------------------------------------------------------- images
def _draw(path, size=(96, 64), mode="RGB", seed=0, fmt=None):
  """A picture of a few coloured shapes on a background, saved at `path`."""
  rng = np.random.default_rng(seed)
  image = Image.new("RGB", size, tuple(int(c) for c in rng.integers(0, 255, 3)))
  draw = ImageDraw.Draw(image)
  for _ in range(3):
    x, y = rng.integers(0, size[0] - 20), rng.integers(0, size[1] - 20)
    w, h = rng.integers(10, 40, 2)
    color = tuple(int(c) for c in rng.integers(0, 255, 3))
    (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x, y, x + w, y + h], fill=color)
  if mode == "I;16":
    gray = np.asarray(image.convert("L")).astype(np.uint16) * 257
    image = Image.fromarray(gray)
  elif mode != "RGB":
    image = image.convert(mode)
  image.save(path, format=fmt)
  return path


def _bad_images(folder):
  """Files of every bad kind; returns {file name: ImageError kind}."""
  (folder / "empty.jpg").write_bytes(b"")
  (folder / "notes.png").write_text("not an image")
  whole = (folder / "whole.jpg")
  _draw(whole, seed=9)
  (folder / "truncated.jpg").write_bytes(whole.read_bytes()[:300])
  whole.unlink()
  Image.fromarray(np.ones((8, 8), np.float32)).save(folder / "float.tiff")
  _draw(folder / "huge.png", size=(400, 300))
  Image.new("RGB", (1001, 2)).save(folder / "sliver.png")  # resized, its height would be 1 px
  return {"empty.jpg": "empty", "notes.png": "undecodable", "truncated.jpg": "undecodable",
          "float.tiff": "unsupported_mode", "huge.png": "huge", "sliver.png": "degenerate"}


def test_load_image_converts_like_opencv_and_names_bad_files(tmp_path):
  rgb = np.asarray(Image.open(_draw(tmp_path / "rgb.png", seed=3)))
  bgr = load_image(str(tmp_path / "rgb.png"))
  assert bgr.converted is None
  np.testing.assert_array_equal(bgr.bgr, rgb[:, :, ::-1])
  gray = load_image(_draw(tmp_path / "gray.png", mode="L", seed=3))
  assert gray.converted == "grayscale" and gray.bgr.shape == (64, 96, 3)
  np.testing.assert_array_equal(gray.bgr[..., 0], gray.bgr[..., 2])
  sixteen = load_image(_draw(tmp_path / "16.png", mode="I;16", seed=3))
  assert sixteen.converted == "16-bit"  # value * 257 >> 8 == value: the 8-bit gray again.
  np.testing.assert_array_equal(sixteen.bgr, gray.bgr)
  cmyk = load_image(_draw(tmp_path / "cmyk.jpg", mode="CMYK", seed=3))
  assert cmyk.converted == "CMYK" and cmyk.bgr.shape == (64, 96, 3)
  assert np.abs(cmyk.bgr.astype(int) - bgr.bgr).mean() < 8  # JPEG loss only.
  rotated = tmp_path / "rotated.jpg"
  exif = Image.Exif()
  exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display.
  Image.open(tmp_path / "rgb.png").save(rotated, exif=exif)
  assert load_image(str(rotated)).bgr.shape == (96, 64, 3)
  for name, kind in _bad_images(tmp_path).items():
    with pytest.raises(ImageError, match=name) as err:
      load_image(str(tmp_path / name), max_pixels=100_000)
    assert err.value.kind == kind, name
  with pytest.raises(ImageError, match="cannot read"):
    load_image(str(tmp_path / "missing.jpg"))
  bomb = tmp_path / "bomb.png"  # A header claiming 15000 x 15000 pixels: refused unread.
  chunk = lambda kind, data: (struct.pack(">I", len(data)) + kind + data
                              + struct.pack(">I", zlib.crc32(kind + data)))
  bomb.write_bytes(b"\x89PNG\r\n\x1a\n"
                   + chunk(b"IHDR", struct.pack(">IIBBBBB", 15000, 15000, 8, 2, 0, 0, 0))
                   + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))
  with pytest.raises(ImageError, match="bomb.png: .*pixels") as err:
    load_image(str(bomb), max_pixels=10**9)
  assert err.value.kind == "huge"


def test_list_images_folders_lists_and_ids(tmp_path):
  for name in ("b/COCO_val2014_000000000042.jpg", "a/COCO_train2014_000000000007.png"):
    (tmp_path / name).parent.mkdir(exist_ok=True)
    _draw(tmp_path / name)
  (tmp_path / "a" / "readme.txt").write_text("x")
  assert extraction.list_images(str(tmp_path), "digits") == [
      ("7", str(tmp_path / "a/COCO_train2014_000000000007.png")),
      ("42", str(tmp_path / "b/COCO_val2014_000000000042.jpg"))]
  listing = tmp_path / "list.txt"
  listing.write_text("b/COCO_val2014_000000000042.jpg\n\n# a comment\n")
  assert extraction.list_images(str(listing)) == [
      ("COCO_val2014_000000000042", str(tmp_path / "b/COCO_val2014_000000000042.jpg"))]
  _draw(tmp_path / "b" / "COCO_val2014_000000000007.jpg")
  with pytest.raises(ValueError, match="both have image id 7"):
    extraction.list_images(str(tmp_path), "digits")
  listing.write_text("nothere.jpg\n")
  with pytest.raises(FileNotFoundError, match="nothere.jpg"):
    extraction.list_images(str(listing))


# ----------------------------------------------------------------------------- the driver
def fake_extract(images):
  """A deterministic stand-in for the detector: 3 boxes per image, features from pixels."""
  out = []
  for image in images:
    h, w = image.shape[:2]
    boxes = np.array([[0, 0, w / 2, h / 2], [w / 4, h / 4, w, h], [0, 0, w, h]], np.float32)
    features = np.stack([np.resize(image[:int(b[3]), :int(b[2])].mean((0, 1)), 8)
                         for b in boxes]).astype(np.float32)
    prob = np.full((3, 5), 0.2, np.float32)
    out.append(RegionFeatures("", features, boxes, w, h, prob))
  return out


def _folder_of_images(folder, n):
  folder.mkdir()
  return [_draw(folder / f"img{i:02d}.jpg", seed=i) for i in range(n)]


@pytest.mark.parametrize("fmt", FORMATS)
def test_run_writes_every_image_once_and_resumes(tmp_path, fmt):
  _folder_of_images(tmp_path / "images", 7)
  images = extraction.list_images(str(tmp_path / "images"))
  output = str(tmp_path / FORMATS[fmt])
  first = extraction.run(images[:4], output, fake_extract, batch_size=3, progress=False)
  assert (first.total, first.already, first.written) == (4, 0, 4)
  calls = []
  counting = lambda batch: calls.append(len(batch)) or fake_extract(batch)
  second = extraction.run(images, output, counting, batch_size=2, progress=False)
  assert (second.total, second.already, second.written, calls) == (7, 4, 3, [2, 1])
  store = open_feature_store(output, feature_dim=8)
  assert sorted(store.keys()) == [f"img{i:02d}" for i in range(7)]
  for key, path in images:
    expected = fake_extract([load_image(path).bgr])[0]
    assert_same_record(RegionFeatures(key, *list(vars(expected).values())[1:]), store[key])


def test_bad_images_stop_naming_the_file_or_are_counted(tmp_path):
  folder = tmp_path / "images"
  _folder_of_images(folder, 3)
  kinds = _bad_images(folder)
  _draw(folder / "zz_gray.png", mode="L")
  _draw(folder / "zz_cmyk.jpg", mode="CMYK")
  _draw(folder / "zz_16bit.png", mode="I;16")
  images = extraction.list_images(str(folder))
  good = [(k, p) for k, p in images if os.path.basename(p) not in kinds]
  ordered = good[:3] + [item for item in images if item not in good] + good[3:]
  output = str(tmp_path / "feats.tsv")
  with pytest.raises(ImageError, match=r"empty.jpg: empty file .*\[empty\]; the 3 finished "
                     r"images are kept in .*feats.tsv"):
    extraction.run(ordered, output, fake_extract, batch_size=3, max_pixels=100_000,
                   progress=False)
  assert written_ids(output) == {k for k, _ in good[:3]}
  summary = extraction.run(ordered, output, fake_extract, batch_size=3, max_pixels=100_000,
                           skip_bad_images=True, progress=False)
  assert (summary.already, summary.written) == (3, 3)
  assert summary.converted == {"grayscale": 1, "CMYK": 1, "16-bit": 1}
  assert sorted(line.split(": ")[0] for line in summary.skipped) == sorted(
      str(folder / name) for name in kinds)
  assert all(f"[{kinds[os.path.basename(line.split(': ')[0])]}]" in line
             for line in summary.skipped)
  assert written_ids(output) == {k for k, _ in good}


def test_detector_output_is_checked_like_a_store_reads_it(tmp_path):
  _folder_of_images(tmp_path / "images", 1)
  images = extraction.list_images(str(tmp_path / "images"))

  def nan_features(batch):
    r = fake_extract(batch)[0]
    return [RegionFeatures("", r.features * np.nan, r.boxes, r.image_w, r.image_h, r.cls_prob)]
  with pytest.raises(FeatureStoreError, match="img00.jpg .*features contains NaN"):
    extraction.run(images, str(tmp_path / "f.tsv"), nan_features, progress=False)

  def wrong_size(batch):
    r = fake_extract(batch)[0]
    return [RegionFeatures("", r.features, r.boxes, 5, 5, r.cls_prob)]
  with pytest.raises(FeatureStoreError, match="reported a 5x5 image, the file is 96x64"):
    extraction.run(images, str(tmp_path / "f.tsv"), wrong_size, progress=False)


_KILLED_RUN = """
import os, signal, sys, time
sys.path.insert(0, {tests!r})
from test_extract import fake_extract
import importlib
from vilbert_jax.data.features import written_ids
extraction = importlib.import_module("vilbert_jax.detection.extract")
calls = []
def dies_on_third_batch(batch):
  calls.append(1)
  if len(calls) == 3:  # Once the second batch is written (it is written meanwhile), die.
    deadline = time.time() + 60
    while len(written_ids({output!r})) < 4 and time.time() < deadline:
      time.sleep(0.01)
    os.kill(os.getpid(), signal.SIGKILL)
  return fake_extract(batch)
extraction.run(extraction.list_images({images!r}), {output!r}, dies_on_third_batch,
               batch_size=2, progress=False)
"""


def test_a_killed_run_loses_no_finished_image(tmp_path):
  _folder_of_images(tmp_path / "images", 7)
  output = str(tmp_path / "feats.tsv")
  script = _KILLED_RUN.format(tests=str(ROOT / "tests"), images=str(tmp_path / "images"),
                              output=output)
  env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
  proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                        text=True, timeout=120)
  assert proc.returncode == -9, proc.stderr
  assert written_ids(output) == {"img00", "img01", "img02", "img03"}
  images = extraction.list_images(str(tmp_path / "images"))
  summary = extraction.run(images, output, fake_extract, batch_size=2, progress=False)
  assert (summary.already, summary.written) == (4, 3)
  assert [r.image_id for r in open_feature_store(output)] == [k for k, _ in images]


@pytest.mark.parametrize("fmt", ["tsv", "lmdb", "npz"])
def test_processes_extract_disjoint_shares_merged_at_the_end(tmp_path, fmt):
  _folder_of_images(tmp_path / "images", 9)
  images = extraction.list_images(str(tmp_path / "images"))
  output = str(tmp_path / FORMATS[fmt])
  extraction.run(images[:2], output, fake_extract, progress=False)  # An earlier run's part.
  barrier = threading.Barrier(3)
  seen, summaries, errors = [[], [], []], [None] * 3, []

  def process(index):
    def extract_fn(batch):
      seen[index].extend(img.tobytes() for img in batch)
      return fake_extract(batch)
    try:
      summaries[index] = extraction.run(
          images, output, extract_fn, batch_size=2, process_index=index, process_count=3,
          barrier=lambda name: barrier.wait(timeout=60), progress=False)
    except Exception as e:  # pylint: disable=broad-except
      errors.append(e)
      barrier.abort()
  threads = [threading.Thread(target=process, args=(i,)) for i in range(3)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert not errors, errors
  assert [s.written for s in summaries] == [3, 2, 2]
  assert all(s.already == 2 for s in summaries)
  pixels = [b for share in seen for b in share]
  assert len(pixels) == len(set(pixels)) == 7  # Disjoint shares, nothing extracted twice.
  assert not os.path.exists(extraction.parts_dir(output))
  store = open_feature_store(output, feature_dim=8)
  assert sorted(store.keys()) == [k for k, _ in images]


@pytest.mark.multiprocess
def test_processes_under_jax_distributed_share_the_images(tmp_path):
  """Two processes of the command line (2 CPU devices each) joined by jax.distributed."""
  import socket  # pylint: disable=g-import-not-at-top
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  _folder_of_images(tmp_path / "images", 7)
  output = tmp_path / "feats.lmdb"
  env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu",
         "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
  workers = [subprocess.Popen(
      [sys.executable, str(ROOT / "tests" / "extract_worker.py"), "--images",
       str(tmp_path / "images"), "--detector", "unused", "--output", str(output),
       "--coordinator_address", f"127.0.0.1:{port}", "--num_processes", "2", "--process_id",
       str(i)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
      for i in range(2)]
  outputs = [w.communicate(timeout=300)[0] for w in workers]
  assert [w.returncode for w in workers] == [0, 0], outputs
  assert "[process 0] 7 images: 0 already in" in outputs[0] and "4 extracted" in outputs[0]
  assert "[process 1] 7 images: 0 already in" in outputs[1] and "3 extracted" in outputs[1]
  assert sorted(open_feature_store(str(output)).keys()) == [f"img{i:02d}" for i in range(7)]
  assert not os.path.exists(extraction.parts_dir(str(output)))


def test_a_killed_merge_is_finished_by_the_next_run(tmp_path):
  _folder_of_images(tmp_path / "images", 4)
  images = extraction.list_images(str(tmp_path / "images"))
  output = str(tmp_path / "feats.tsv")
  part = os.path.join(extraction.parts_dir(output), "process-00001-of-00002.tsv")
  extraction.run(images[1:], part, fake_extract, progress=False)  # A share, never merged.
  extraction.run(images[:2], output, fake_extract, progress=False)
  summary = extraction.run(images, output, fake_extract, progress=False)
  assert (summary.already, summary.written) == (4, 0)
  assert [r.image_id for r in open_feature_store(output)] == [k for k, _ in images]
  assert not os.path.exists(extraction.parts_dir(output))


def test_device_extractor_gives_each_local_device_a_share():
  devices = jax.local_devices()
  assert len(devices) == 8  # conftest
  calls = []

  def on_device(params, cfg, images, protocol):
    calls.append((next(iter(params["w"].devices())), len(images), protocol))
    return fake_extract(images)
  extractor = extraction.DeviceExtractor({"w": np.ones(3)}, None, "port", devices[:4],
                                         extract=on_device)
  images = [np.full((8 + i, 10, 3), i, np.uint8) for i in range(10)]
  records = extractor(images)
  assert [r.image_h for r in records] == [8 + i for i in range(10)]
  assert sorted((d.id, n) for d, n, _ in calls) == [(0, 3), (1, 3), (2, 2), (3, 2)]
  assert {p for _, _, p in calls} == {"port"}


# ----------------------------------------------------------------------------- end to end
QUESTIONS = ("what color is the cat ?", "how many dogs are there ?", "is there a red cube ?",
             "what is left of the bus ?", "is the ball big ?")
ANSWERS = ("yes", "no", "2")  # each the answer of >= 9 questions: the builder's default vocab


def _vqa_annotations(manual, images):
  """Official-format VQA v2 files for {"train2014": [ids], "val2014": [ids]}."""
  qid = 0
  for part, ids in images.items():
    questions, annotations = [], []
    for image in ids:
      for text in QUESTIONS:
        qid += 1
        answer = ANSWERS[qid % 3]
        questions.append({"question_id": qid, "image_id": image, "question": text})
        annotations.append({"question_id": qid, "image_id": image, "answer_type": "other",
                            "multiple_choice_answer": answer,
                            "answers": [{"answer": answer, "answer_id": k + 1}
                                        for k in range(10)]})
    (manual / f"v2_OpenEnded_mscoco_{part}_questions.json").write_text(
        json.dumps({"questions": questions}))
    (manual / f"v2_mscoco_{part}_annotations.json").write_text(
        json.dumps({"annotations": annotations}))


def _readme_section() -> str:
  readme = (ROOT / "README.md").read_text()
  return readme.split("### Extracting a folder of images", 1)[1].split("\n## ", 1)[0]


def _substitute(text: str, paths: dict) -> str:
  for old, new in paths.items():
    text = text.replace(old, str(new))
  return text


def _python(args, **kw):
  """`python ARGS` from the repository root on one CPU device."""
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env.update(PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=600, **kw)


@pytest.fixture(scope="module")
def detector_dir(tmp_path_factory):
  """The tiny random-weight reference detector, through the converter's command line."""
  tmp = tmp_path_factory.mktemp("detector")
  ref = np.load(ROOT / "tests" / "fixtures" / "frcnn_tiny.npz")
  np.savez(tmp / "tiny.npz", **{k[len("param/"):]: ref[k] for k in ref.files
                               if k.startswith("param/")})
  (tmp / "config.yaml").write_text(str(ref["meta/config_yaml"]))
  assert convert_main(["frcnn", "--checkpoint", str(tmp / "tiny.npz"), "--config",
                       str(tmp / "config.yaml"), "--output", str(tmp / "frcnn")]) == 0
  return tmp / "frcnn"


def test_from_image_files_to_vqa_answers(tmp_path, detector_dir, capsys):
  """Drawn images -> README extraction command (tiny detector) -> TSV store -> README
  vilbert_vqa2 build -> 3 fine-tuning steps through launch.py -> minval predictions file ->
  the README's Predictor example answering about an image file."""
  photos, manual, tfds_dir, workdir = (tmp_path / "train2014", tmp_path / "vqa",
                                       tmp_path / "tfds", tmp_path / "run")
  photos.mkdir()
  manual.mkdir()
  split_ids = {"train2014": [101, 102, 103, 104, 105, 106], "val2014": [201]}
  for part, ids in split_ids.items():
    for i, image in enumerate(ids):
      _draw(photos / f"COCO_{part}_{image:012d}.{'png' if i == 1 else 'jpg'}",
            size=(160, 120), mode="L" if i == 2 else "RGB", seed=image)
  (photos / "COCO_train2014_000000000000.jpg").write_bytes(b"")  # a bad file, listed first
  _vqa_annotations(manual, split_ids)
  paths = {"/data/coco/train2014": photos, "/ckpt/frcnn_vg": detector_dir, "/data/vqa": manual,
           "/data/tfds": tfds_dir, "--feature_dim 2048": "--feature_dim 128"}
  section = _readme_section()
  block = re.search(r"```bash\n(.*?)```", section, re.S).group(1).replace("\\\n", " ")
  extract_cmd, build_cmd = [shlex.split(_substitute(line, paths))
                            for line in block.splitlines() if line.strip()]
  assert extract_cmd[:3] == ["python", "-m", "vilbert_jax.detection.extract"]
  assert build_cmd[:3] == ["python", "-m", "tfds_builders.build"]

  failed = _python(extract_cmd[1:])
  assert failed.returncode == 1, failed.stderr
  assert "COCO_train2014_000000000000.jpg: empty file (0 bytes) [empty]" in failed.stderr
  done = _python(extract_cmd[1:] + ["--skip_bad_images"])
  assert done.returncode == 0, done.stderr
  assert "8 images: 0 already in" in done.stdout and "7 extracted" in done.stdout
  assert "converted to 8-bit BGR: 1 grayscale" in done.stdout
  assert "skipped: " in done.stdout and "[empty]" in done.stdout
  assert "img/s" in done.stderr  # the progress bar
  store = open_feature_store(str(manual / "features_trainval.tsv"), feature_dim=128)
  assert sorted(store.keys(), key=int) == [str(i) for ids in split_ids.values() for i in ids]
  for record in store:
    assert (record.image_w, record.image_h) == (160, 120)
    assert 10 <= record.num_boxes <= 36 and record.cls_prob.shape == (record.num_boxes, 21)
    np.testing.assert_allclose(record.cls_prob.sum(1), 1, rtol=1e-5)
    assert (record.boxes >= 0).all() and (record.boxes[:, 2] <= 160).all()
    assert (record.boxes[:, 3] <= 120).all()

  assert build_main(build_cmd[3:]) == 0
  name = "vilbert_vqa2/default-feature_dim128"
  model = {**{k: v for k, v in TINY.items() if k.startswith("model.")},
           "model.vocab_size": 81, "model.v_feature_size": 128, "model.v_target_size": 21}
  launched = _python(["launch.py", "--config", "configs/vqa.py:no_pretraining", "--workdir",
                      str(workdir), f"--config.data.name={name}",
                      f"--config.data.data_dir={tfds_dir}", "--config.data.tokenizer=synthetic",
                      "--config.data.max_text_len=12", "--config.data.num_visual_tokens=11",
                      "--config.data.worker_count=0", "--config.batch_size=4",
                      "--config.num_train_steps=3", "--config.log_every_steps=1",
                      *[f"--config.{k}={v}" for k, v in model.items()]])
  assert launched.returncode == 0, launched.stdout[-3000:] + launched.stderr[-3000:]
  predictions = json.loads((workdir / "vqa_minval_predictions.json").read_text())
  assert sorted(p["question_id"] for p in predictions) == list(range(31, 36))
  assert {p["answer"] for p in predictions} <= set(ANSWERS)

  image = photos / "COCO_val2014_000000000201.jpg"
  python_block = next(b for b in re.findall(r"```python\n(.*?)```", section, re.S)
                      if "detector=" in b)
  capsys.readouterr()
  code = _substitute(python_block, {"/ckpt/vqa": workdir, "/ckpt/frcnn_vg": detector_dir,
                                    "/data/photos/kitchen.jpg": image})
  exec(code, {})  # pylint: disable=exec-used
  answers, shape = capsys.readouterr().out.splitlines()
  assert re.fullmatch(r"\[\('(yes|no|2)', 0\.\d+\)(, \('(yes|no|2)', 0\.\d+\)){2}\]", answers)
  predictor = Predictor.load(str(workdir), detector=str(detector_dir))
  regions = predictor.regions(image)
  assert shape == str(regions.boxes.shape)
  stored = store["201"]  # Batch 4 in the extraction, batch 1 here: the same regions.
  np.testing.assert_allclose(regions.boxes, stored.boxes, rtol=1e-5, atol=1e-3)
  np.testing.assert_allclose(regions.features, stored.features, rtol=1e-4, atol=1e-5)
  assert predictor.answer("is the ball big ?", stored, top_k=3) == pytest.approx(
      predictor.answer("is the ball big ?", str(image), top_k=3), rel=1e-4)
  with pytest.raises(ValueError, match="no detector"):
    Predictor.load(str(workdir)).answer("is the ball big ?", str(image))
  predictor.detector = lambda bgr: fake_extract([bgr])[0]  # 8-wide features
  with pytest.raises(ValueError, match="8-wide region features, this model reads 128"):
    predictor.answer("is the ball big ?", str(image))
