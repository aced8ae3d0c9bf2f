"""Region features for a folder of images, written as a feature store every builder reads.

    python -m vilbert_jax.detection.extract --images DIR_or_LIST --detector PARAMS_DIR \
        --output feats.tsv | feats.lmdb | DIR/ [--image_ids stem|digits] [--skip_bad_images]

`--images`: a folder (every file with an image suffix, searched recursively) or a text file
listing image paths, one per line (relative to the list's folder). Image ids are the file
names without suffix (`--image_ids stem`) or the number at their end (`digits`:
`COCO_val2014_000000000042.jpg` -> `42`, the ids VQA and COCO annotations use).

The output format follows the name (`data.features.writer_format`): `*.tsv` (bottom-up-attention
TSV), `*.lmdb` (the original LMDB store), anything else a folder of `<image_id>.npz`. Each
record has the region features, boxes in pixels of the original image, the image size and the
detector's full class distribution (`cls_prob`, background first).

Resumable: ids already in the output are skipped; each batch is written while the detector
runs on the next, so a killed run loses at most the batches in flight (never a written one).
Batches are split over all local devices; under `jax.distributed` (`--coordinator_address
...`, or SLURM / Open MPI / Cloud TPU detected) each process extracts a disjoint share into
`<output>.parts/` and process 0 merges the shares into the output at the end. Bad images
(`images.load_image`) stop the run with an error naming the file, or, with
`--skip_bad_images`, are counted and listed at the end.
"""
from __future__ import annotations

import argparse
import collections
import concurrent.futures
import dataclasses
import glob
import os
import re
import shutil
import sys
import time
import types
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from vilbert_jax.data.features import (FeatureStoreError, RegionFeatures, make_record,
                                       open_feature_store, open_feature_writer, writer_format,
                                       written_ids)
from vilbert_jax.detection.images import DEFAULT_MAX_PIXELS, ImageError, load_image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
ID_RULES = ("stem", "digits")
# images (BGR uint8 arrays) -> one RegionFeatures per image, image ids left to the caller.
ExtractFn = Callable[[List[np.ndarray]], List[RegionFeatures]]


# ----------------------------------------------------------------------------- image list
def image_id(path: str, rule: str = "stem") -> str:
  """The id of the image at `path`: its file name without suffix, or (`digits`) the number
  at the end of that name without leading zeros."""
  stem = os.path.splitext(os.path.basename(path))[0]
  if rule == "stem":
    return stem
  if rule != "digits":
    raise ValueError(f"image id rule {rule!r}: choose from {ID_RULES}")
  match = re.search(r"(\d+)$", stem)
  if not match:
    raise ValueError(f"{path}: --image_ids digits needs a file name ending in a number")
  return str(int(match.group(1)))


def list_images(source: str, rule: str = "stem") -> List[Tuple[str, str]]:
  """`(image_id, path)` of every image of `source` (a folder or a list file), sorted by path.

  Raises:
    FileNotFoundError: `source` or a listed file does not exist.
    ValueError: two files give the same id (both named), or `source` holds no image.
  """
  if os.path.isdir(source):
    paths = sorted(p for p in glob.glob(os.path.join(source, "**", "*"), recursive=True)
                   if p.lower().endswith(IMAGE_SUFFIXES) and os.path.isfile(p))
  elif os.path.isfile(source):
    base = os.path.dirname(os.path.abspath(source))
    with open(source) as f:
      lines = [line.strip() for line in f]
    paths = [os.path.join(base, p) for p in lines if p and not p.startswith("#")]
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
      raise FileNotFoundError(f"{source} lists {len(missing)} files that do not exist, e.g. "
                              f"{missing[0]}")
  else:
    raise FileNotFoundError(f"--images {source}: no such folder or list file")
  if not paths:
    raise ValueError(f"--images {source}: no image files ({', '.join(IMAGE_SUFFIXES)})")
  seen: Dict[str, str] = {}
  for path in paths:
    key = image_id(path, rule)
    if key in seen:
      raise ValueError(f"{seen[key]} and {path} both have image id {key}")
    seen[key] = path
  return [(key, path) for key, path in seen.items()]


# ----------------------------------------------------------------------------- devices
class DeviceExtractor:
  """Runs the detector on a list of images, split into one contiguous share per device; each
  device holds its own copy of the params and works in its own thread (images of different
  sizes need no common shape). Calling it returns the records in input order."""

  def __init__(self, params, cfg, protocol: str = "bottom_up",
               devices: Optional[Sequence] = None, extract: Optional[Callable] = None):
    import jax  # pylint: disable=g-import-not-at-top
    if extract is None:  # The detector (the package's `extract` may be this module).
      from vilbert_jax.detection import detector_extract  # pylint: disable=g-import-not-at-top
      extract = detector_extract
    self.devices = list(devices or jax.local_devices())
    self._params = [jax.device_put(params, d) for d in self.devices]
    self._cfg, self._protocol, self._extract = cfg, protocol, extract
    self._pool = concurrent.futures.ThreadPoolExecutor(len(self.devices))

  def _run(self, k: int, images: List[np.ndarray]) -> List[RegionFeatures]:
    import jax  # pylint: disable=g-import-not-at-top
    with jax.default_device(self.devices[k]):
      return list(self._extract(self._params[k], self._cfg, images, protocol=self._protocol))

  def __call__(self, images: List[np.ndarray]) -> List[RegionFeatures]:
    shares = np.array_split(np.arange(len(images)), len(self.devices))
    futures = [self._pool.submit(self._run, k, [images[i] for i in share])
               for k, share in enumerate(shares) if len(share)]
    return [r for f in futures for r in f.result()]


# ----------------------------------------------------------------------------- the run
@dataclasses.dataclass(frozen=True)
class Summary:
  """What one process did.

  Attributes:
    total: images listed.
    already: of them, already in the output (or a share of it) when the run started.
    written: images this process extracted and wrote.
    skipped: "path: reason" of each bad image skipped by this process.
    converted: count of images converted to 8-bit BGR, by what they were ("grayscale", ...).
    seconds: wall time of this process's extraction.
  """
  total: int
  already: int
  written: int
  skipped: List[str]
  converted: Dict[str, int]
  seconds: float

  @property
  def images_per_s(self) -> float:
    return self.written / self.seconds if self.seconds > 0 else 0.0


def parts_dir(output: str) -> str:
  """Where the processes of a multi-process run write their shares."""
  return output.rstrip("/") + ".parts"


def _part_path(output: str, index: int, count: int) -> str:
  suffix = {"tsv": ".tsv", "lmdb": ".lmdb", "npz": ""}[writer_format(output)]
  return os.path.join(parts_dir(output), f"process-{index:05d}-of-{count:05d}{suffix}")


def _existing_parts(output: str) -> List[str]:
  return sorted(glob.glob(os.path.join(parts_dir(output), "process-*")))


def _decode(items: Sequence[Tuple[str, str]], max_pixels: int, skip_bad: bool, pool):
  """Loads a batch of images with `pool`'s threads: `(kept items, images, skipped,
  converted)`."""
  loaded = list(pool.map(lambda item: _try_load(item[1], max_pixels), items))
  kept, images, skipped, converted = [], [], [], []
  for item, result in zip(items, loaded):
    if isinstance(result, ImageError):
      if not skip_bad:
        raise result
      skipped.append(f"{result} [{result.kind}]")
    else:
      kept.append(item)
      images.append(result.bgr)
      if result.converted:
        converted.append(result.converted)
  return kept, images, skipped, converted


def _try_load(path: str, max_pixels: int):
  try:
    return load_image(path, max_pixels)
  except ImageError as e:
    return e


def _checked(record: RegionFeatures, key: str, path: str, image: np.ndarray) -> RegionFeatures:
  """The detector's record under id `key`, checked as every store reader checks it."""
  height, width = image.shape[:2]
  if (record.image_w, record.image_h) != (width, height):
    raise FeatureStoreError(f"{path}: the detector reported a {record.image_w}x"
                            f"{record.image_h} image, the file is {width}x{height}")
  return make_record(path, key, record.image_w, record.image_h, record.num_boxes, record.boxes,
                     record.features, record.cls_prob)


class _Loop:
  """Decode, detect, write over batches: the next batch is decoded, and the previous one
  checked and written, while the detector runs on the current one. Counts what it did."""

  def __init__(self, extract_fn: ExtractFn, max_pixels: int, skip_bad: bool,
               decode_threads: int, progress_bar):
    self.extract_fn, self.max_pixels, self.skip_bad = extract_fn, max_pixels, skip_bad
    self.decode_threads, self.progress_bar = decode_threads, progress_bar
    self.written, self.skipped, self.converted = 0, [], collections.Counter()

  def run(self, batches: List[List[Tuple[str, str]]], writer) -> None:
    """Extracts `batches` into `writer`; on any error, the batch being written is finished
    (and counted) before the error propagates."""
    pool = concurrent.futures.ThreadPoolExecutor(self.decode_threads)
    ahead = concurrent.futures.ThreadPoolExecutor(1)
    behind = concurrent.futures.ThreadPoolExecutor(1)
    decode = lambda batch: ahead.submit(_decode, batch, self.max_pixels, self.skip_bad, pool)
    writing = None
    try:
      pending = decode(batches[0]) if batches else None
      for k, batch in enumerate(batches):
        kept, loaded, bad, kinds = pending.result()
        if k + 1 < len(batches):
          pending = decode(batches[k + 1])
        self.skipped += bad
        self.converted.update(kinds)
        records = self.extract_fn(loaded) if loaded else []
        if len(records) != len(loaded):
          raise FeatureStoreError(f"the detector returned {len(records)} records for "
                                  f"{len(loaded)} images ({kept[0][1]} ...)")
        if writing is not None:
          writing, _ = None, writing.result()
        writing = behind.submit(self._write, writer, records, kept, loaded, len(batch))
      if writing is not None:
        writing, _ = None, writing.result()
    finally:
      if writing is not None:
        concurrent.futures.wait([writing])  # Counted by _write if it succeeded.
      for executor in (behind, ahead, pool):
        executor.shutdown(wait=executor is behind, cancel_futures=True)

  def _write(self, writer, records, kept, loaded, batch_len: int) -> None:
    writer.write([_checked(r, key, path, image)
                  for r, (key, path), image in zip(records, kept, loaded)])
    self.written += len(kept)
    self.progress_bar.update(batch_len)


def run(images: Sequence[Tuple[str, str]], output: str, extract_fn: ExtractFn, *,
        batch_size: int = 8, skip_bad_images: bool = False,
        max_pixels: int = DEFAULT_MAX_PIXELS, process_index: int = 0, process_count: int = 1,
        barrier: Callable[[str], None] = lambda name: None, progress: bool = True,
        decode_threads: int = 4) -> Summary:
  """Extracts the images not yet in `output` and writes them there.

  Args:
    images: `(image_id, path)` pairs (`list_images`), the same list on every process.
    output: the store to extend (`data.features.writer_format`).
    extract_fn: BGR uint8 images -> their records (`DeviceExtractor`).
    batch_size: images decoded and extracted per step (over all local devices).
    skip_bad_images: skip and count images `load_image` rejects instead of stopping.
    max_pixels: larger images are bad images.
    process_index, process_count, barrier: this process, the number of processes and a
      barrier over all of them (`multihost_utils.sync_global_devices`); with several
      processes each writes `images[todo][process_index::process_count]` to its own share
      in `parts_dir(output)`, and process 0 merges every share into `output` at the end.
    progress: show a progress bar (images/s) on stderr.
    decode_threads: threads decoding images (Pillow releases the GIL while decoding).

  Raises:
    ImageError: a bad image without `skip_bad_images`; everything written before it stays.
    FeatureStoreError: the detector returned a record no store reader would accept.
    Any error stops this process's extraction but is raised only after the barriers, so the
    other processes finish and the shares written so far are merged.
  """
  parts = _existing_parts(output)
  done = written_ids(output)
  for part in parts:
    done |= written_ids(part)
  todo = [item for item in images if item[0] not in done]
  mine = todo[process_index::process_count]
  barrier("vilbert_jax.extract.plan")  # Everyone has read the stores before anyone writes.
  target = output if process_count == 1 else _part_path(output, process_index, process_count)
  start = time.perf_counter()
  batches = [mine[i:i + batch_size] for i in range(0, len(mine), batch_size)]
  progress_bar = _progress_bar(len(mine), process_index, progress)
  loop = _Loop(extract_fn, max_pixels, skip_bad_images, decode_threads, progress_bar)
  error = None
  try:
    with open_feature_writer(target) as writer:
      loop.run(batches, writer)
  except ImageError as e:
    finished = len(images) - len(todo) + loop.written
    error = ImageError(e.path, e.kind, f"{e.reason} [{e.kind}]; the {finished} finished images "
                       f"are kept in {target}: rerun to continue, with --skip_bad_images to "
                       "skip such files")
    error.__cause__ = e
  except Exception as e:  # pylint: disable=broad-except
    error = e  # Raised below, after the other processes are released from the barriers.
  finally:
    progress_bar.close()
  seconds = time.perf_counter() - start
  barrier("vilbert_jax.extract.written")
  if process_index == 0 and (process_count > 1 or parts):
    merge_parts(output)
  barrier("vilbert_jax.extract.merged")
  if error is not None:
    raise error
  return Summary(len(images), len(images) - len(todo), loop.written, loop.skipped,
                 dict(loop.converted), seconds)


def merge_parts(output: str, batch: int = 256) -> int:
  """Appends every record of the shares in `parts_dir(output)` that `output` lacks, then
  removes the shares; returns how many records were added. Safe to rerun after a kill."""
  added = 0
  with open_feature_writer(output) as writer:
    for part in _existing_parts(output):
      open_feature_writer(part).close()  # Cuts what a killed writer left half written.
      if not written_ids(part):
        continue
      chunk = []
      for record in open_feature_store(part):
        if record.image_id not in writer.done_ids:
          chunk.append(record)
        if len(chunk) == batch:
          writer.write(chunk)
          added, chunk = added + len(chunk), []
      writer.write(chunk)
      added += len(chunk)
  shutil.rmtree(parts_dir(output))
  return added


def _progress_bar(total: int, process_index: int, enabled: bool):
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  return tqdm(total=total, unit="img", desc=f"extract (process {process_index})",
              disable=not enabled, file=sys.stderr, smoothing=0.1,
              bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, "
                         "{rate_noinv_fmt}]")  # Always images/s, also below 1 image/s.


# ----------------------------------------------------------------------------- CLI
def _parse(argv: Sequence[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      prog="python -m vilbert_jax.detection.extract", description=__doc__,
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--images", required=True, help="a folder of images or a list file")
  parser.add_argument("--detector", required=True,
                      help="params directory written by python -m vilbert_jax.convert frcnn")
  parser.add_argument("--output", required=True, help="feats.tsv, feats.lmdb or a folder")
  parser.add_argument("--protocol", default="bottom_up", choices=("bottom_up", "port"))
  parser.add_argument("--image_ids", default="stem", choices=ID_RULES)
  parser.add_argument("--batch_size", type=int, default=0,
                      help="images per step over all local devices (default 4 per device)")
  parser.add_argument("--skip_bad_images", action="store_true")
  parser.add_argument("--max_pixels", type=int, default=DEFAULT_MAX_PIXELS)
  parser.add_argument("--num_devices", type=int, default=0,
                      help="local devices to use (default all)")
  parser.add_argument("--coordinator_address", default="")
  parser.add_argument("--num_processes", type=int, default=0)
  parser.add_argument("--process_id", type=int, default=-1)
  parser.add_argument("--no_progress", action="store_true")
  return parser.parse_args(argv)


def main(argv: Sequence[str]) -> int:
  """The command line; returns 0, or 1 after printing a bad image's or record's error."""
  args = _parse(argv)
  # pylint: disable=g-import-not-at-top
  import jax
  import ml_collections
  from jax.experimental import multihost_utils
  from vilbert_jax.detection import load_detector
  from vilbert_jax.train import distributed
  # pylint: enable=g-import-not-at-top
  if not jax.config.jax_compilation_cache_dir:  # launch.py's persistent cache: reruns are quick
    jax.config.update("jax_compilation_cache_dir",
                      os.path.expanduser("~/.cache/vilbert_jax/jax_compilation_cache"))
  distributed.maybe_initialize(ml_collections.ConfigDict({"distributed": dict(
      coordinator_address=args.coordinator_address, num_processes=args.num_processes,
      process_id=args.process_id)}))
  writer_format(args.output)  # A wrong kind of output fails before the detector loads.
  images = list_images(args.images, args.image_ids)
  params, cfg = load_detector(args.detector)
  devices = jax.local_devices()[:args.num_devices or None]
  extractor = DeviceExtractor(params, cfg, args.protocol, devices)
  count = jax.process_count()
  try:
    summary = run(images, args.output, extractor,
                  batch_size=args.batch_size or 4 * len(devices),
                  skip_bad_images=args.skip_bad_images, max_pixels=args.max_pixels,
                  process_index=jax.process_index(), process_count=count,
                  barrier=(multihost_utils.sync_global_devices if count > 1
                           else lambda name: None),
                  progress=not args.no_progress)
  except (ImageError, FeatureStoreError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  _report(summary, args.output, jax.process_index())
  return 0


def _report(summary: Summary, output: str, process_index: int) -> None:
  print(f"[process {process_index}] {summary.total} images: {summary.already} already in "
        f"{output}, {summary.written} extracted ({summary.images_per_s:.2f} images/s), "
        f"{len(summary.skipped)} skipped")
  for kind, n in sorted(summary.converted.items()):
    print(f"  converted to 8-bit BGR: {n} {kind}")
  for line in summary.skipped:
    print(f"  skipped: {line}")


class _CallableModule(types.ModuleType):
  """Importing this module makes it the attribute `extract` of `vilbert_jax.detection`,
  where the detector function of the same name lives: calling it calls that function."""

  def __call__(self, *args, **kwargs):
    from vilbert_jax.detection import detector_extract  # pylint: disable=g-import-not-at-top
    return detector_extract(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
