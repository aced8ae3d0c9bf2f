"""Building a dataset as an Apache Beam pipeline: the same files as `tfds_io.build`, written in
parallel by many worker processes or machines.

  pipeline (started first) starts its workers while the planner runs; its first step waits
                           for the planner's list of plan files.
  planner (this process)   runs the builder's split generators with decoding deferred: the
                           annotations are joined as usual, but each image is only located
                           (TSV file + byte offset and length, LMDB key, per-image file) and
                           missing images are found. The records of each split are cut into
                           shards of `records_per_shard` consecutive records, each described
                           in a small plan file.
  workers (Beam ParDo)     read, decode and check their shard's images, select the stored
                           fields, serialise the records and write one uncompressed
                           array_record shard (+ its captions), reporting lengths, item counts,
                           skipped rows and the first bad row.
  finish (this process)    names the shards as TFDS expects, joins the captions side file,
                           writes `dataset_info.json` last and moves the folder into place.

Records, their order, the item counts, the `--skip_bad_rows` report and the error a bad row
raises equal the single-process build's (tested for every builder and store format); only
the shard boundaries differ. Beam is imported only here (it needs protobuf<7: install it in
its own environment from requirements-beam.txt); a worker imports this module and the
builders, which import neither JAX nor grain (`vilbert_jax` imports its names lazily).
"""
from __future__ import annotations

import dataclasses
import glob
import os
import pickle
import resource
import shlex
import threading
import time
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from etils import epath

from vilbert_jax.data import records, tfds_io
from vilbert_jax.data.features import FeatureStoreError, open_feature_store
from vilbert_jax.data.features.tsv import read_line

_PLANS = "beam_plans"  # folder in the incomplete dataset folder; removed before finishing


@dataclasses.dataclass(frozen=True)
class BuilderArgs:
  """What `tfds_builders.build.make_builder` needs to re-create the builder in a worker."""
  name: str
  data_dir: str
  config: Optional[str] = None
  skip_bad_rows: bool = False
  overrides: Tuple[Tuple[str, object], ...] = ()

  def make(self):
    from tfds_builders import build  # pylint: disable=import-outside-toplevel (imports us)
    return build.make_builder(self.name, self.data_dir, self.config, self.skip_bad_rows,
                              **dict(self.overrides))


@dataclasses.dataclass(frozen=True)
class ShardPlan:
  """One shard for a worker: consecutive records of a split, images not yet decoded.

  Attributes:
    builder: how to re-create the builder (features, config, skip policy).
    split: the split the records belong to.
    index: the shard's place among all shards of the build (order of the output).
    positions: each record's place in the whole build (orders skips and errors).
    examples: the builder's examples; images are `records.DEFERRED_IMAGE` placeholders.
    out_dir: where to write the shard (the build's incomplete folder).
  """
  builder: BuilderArgs
  split: str
  index: int
  positions: List[int]
  examples: List[Dict]
  out_dir: str


@dataclasses.dataclass(frozen=True)
class ShardResult:
  """What a worker wrote and found.

  Attributes:
    length, num_bytes, counts: records, serialised bytes, {task: item count per record}.
    path, captions: the shard file and its captions part (None when nothing was written).
    skipped: (position, message) of each bad row skipped.
    error: (position, exception) of the first bad row when not skipping, else None.
    cpu_seconds: CPU time the worker spent on this shard (user + system, all its threads).
  """
  split: str
  index: int
  path: Optional[str]
  captions: Optional[str]
  length: int
  num_bytes: int
  counts: Dict[str, List[int]]
  skipped: List[Tuple[int, str]]
  error: Optional[Tuple[int, BaseException]]
  cpu_seconds: float


def pipeline_options(runner: str, workers: int, extra: Sequence[str] = ()) -> List[str]:
  """Beam pipeline arguments for `runner`.

  Args:
    runner: "local" = this machine's `workers` processes (Beam's FnApiRunner in
      multi-processing mode; 1 = in this process; unlike the DirectRunner it never tries to
      download the Prism runner, so it works offline), or a Beam runner name (DataflowRunner,
      FlinkRunner, SparkRunner, PortableRunner, ...) configured by `extra`.
    extra: further pipeline options, passed through (e.g. --project, --region,
      --temp_location, --num_workers, --extra_package).
  """
  if runner == "local":
    mode = "multi_processing" if workers > 1 else "in_memory"  # 1 worker: this process
    return ["--runner=FnApiRunner", f"--direct_running_mode={mode}",
            f"--direct_num_workers={workers}", *extra]
  return [f"--runner={runner}", *extra]


def build(args: BuilderArgs, manual_dir: Optional[str], beam_options: Sequence[str],
          records_per_shard: int = 500, profile: Optional[Dict[str, float]] = None) -> str:
  """Builds the dataset of `args` with a Beam pipeline; returns its folder (like `tfds_io.build`).

  Args:
    manual_dir: the source files.
    beam_options: pipeline arguments (`pipeline_options`).
    records_per_shard: records per shard and work item (500 paper-shaped float32 records are
      ~260 MB); more shards than workers balance the load.
    profile: if given, filled with where the time went, in seconds: `{phase}_wall` and
      `{phase}_cpu` (this process) for the phases "plan" (with the pipeline's start, which
      runs meanwhile), "pipeline" (from the end of planning) and "finish";
      `pipeline_children_cpu` (CPU of this process's finished child processes during the
      pipeline: the local runner's workers, start-up and shut-down included) and
      `shard_cpu` (the workers' CPU inside `write_shard`, summed over shards).
  """
  builder = args.make()
  final = epath.Path(builder.data_dir)
  if tfds_io.is_built(builder):
    return os.fspath(final)
  clock = _PhaseClock(profile)
  with tfds_io.incomplete_dir(final) as tmp:
    plan_dir = tmp / _PLANS
    plan_dir.mkdir()
    pipeline = _Pipeline(os.fspath(plan_dir), beam_options)  # workers start while we plan
    try:
      plans, splits, skipped, error = plan(builder, args, manual_dir, tmp, records_per_shard)
    except BaseException:
      pipeline.publish([])  # nothing to write: the pipeline ends at once
      pipeline.wait(raise_error=False)  # the planner's error is the one to report
      raise
    pipeline.publish(plans)
    clock.lap("plan")
    pipeline.wait()
    results = [_load(p) for p in sorted(glob.glob(os.path.join(plan_dir, "*.result")))]
    clock.lap("pipeline", shard_cpu=sum(r.cpu_seconds for r in results))
    for result in results:
      skipped.extend((position, 1, message) for position, message in result.skipped)
      if result.error is not None and (error is None or result.error[0] < error[0]):
        error = result.error
    if error is not None:
      raise error[1]
    if hasattr(builder, "skips"):  # the list the metadata holds, in single-process order
      builder.skips.skipped[:] = [m for _, _, m in sorted(skipped, key=lambda s: s[:2])]
    _finish(builder, tmp, final, splits, results)
    clock.lap("finish")
  return os.fspath(final)


class _PhaseClock:
  """Wall and CPU time of consecutive phases, written into `profile` (None: not measured)."""

  def __init__(self, profile: Optional[Dict[str, float]]):
    self.profile = profile
    self._last = self._now()

  @staticmethod
  def _now() -> Tuple[float, float, float]:
    own, children = (resource.getrusage(resource.RUSAGE_SELF),
                     resource.getrusage(resource.RUSAGE_CHILDREN))
    return (time.perf_counter(), own.ru_utime + own.ru_stime,
            children.ru_utime + children.ru_stime)

  def lap(self, phase: str, **extra: float) -> None:
    now = self._now()
    if self.profile is not None:
      self.profile[f"{phase}_wall"] = now[0] - self._last[0]
      self.profile[f"{phase}_cpu"] = now[1] - self._last[1]
      if phase == "pipeline":
        self.profile["pipeline_children_cpu"] = now[2] - self._last[2]
      self.profile.update(extra)
    self._last = now


def plan(builder, args: BuilderArgs, manual_dir: Optional[str], tmp: epath.Path,
         records_per_shard: int):
  """Runs the builder's generators with decoding deferred and writes the shard plans.

  Returns:
    plan file paths; the splits in order; skips found while planning as (position, 0,
    message); and (position, exception) if planning stopped at an error (the records before
    it are still planned, so that an earlier bad row found by a worker wins, as it would in
    the single-process build), else None.
  """
  if hasattr(builder, "defer_decoding"):
    builder.defer_decoding = True
  skips = builder.skips.skipped if hasattr(builder, "skips") else []
  paths, splits, tagged, position, seen = [], [], [], 0, 0

  def tag_new_skips():
    nonlocal seen
    tagged.extend((position, 0, message) for message in skips[seen:])
    seen = len(skips)

  def flush(split, chunk):
    path = os.path.join(tmp, _PLANS, f"{len(paths):06d}.plan")
    shard = ShardPlan(args, split, len(paths), [p for p, _ in chunk], [e for _, e in chunk],
                      os.fspath(tmp))
    with open(path, "wb") as f:
      pickle.dump(shard, f, protocol=pickle.HIGHEST_PROTOCOL)
    paths.append(path)

  split, chunk = None, []
  try:
    for split, generator in tfds_io.split_generators(builder, manual_dir,
                                                     epath.Path(builder.data_dir)).items():
      splits.append(split)
      for _, example in generator:
        tag_new_skips()
        chunk.append((position, example))
        position += 1
        if len(chunk) == records_per_shard:
          flush(split, chunk)
          chunk = []
      if chunk:
        flush(split, chunk)
        chunk = []
  except Exception as e:  # pylint: disable=broad-except  (re-raised by `build`)
    tag_new_skips()
    if chunk:
      flush(split, chunk)
    if not paths:
      raise
    return paths, splits, tagged, (position, e)
  tag_new_skips()
  return paths, splits, tagged, None


def write_shard(plan_path: str) -> str:
  """The worker: decodes, serialises and writes one planned shard; returns its result file."""
  start = time.process_time()
  shard = _load(plan_path)
  builder = shard.builder.make()
  serializer = tfds_io.RecordSerializer(builder.info.features)
  base = os.path.join(shard.out_dir, f"{shard.split}.beam{shard.index:06d}")
  writers, stores, length, num_bytes, counts, skipped, error = {}, {}, 0, 0, {}, [], None
  for position, example in zip(shard.positions, shard.examples):
    try:
      example = _with_image(example, builder, stores)
    except _BadRow as e:
      if e.skippable and shard.builder.skip_bad_rows:
        skipped.append((position, str(e.error)))
        continue
      error = (position, e.error)
      break
    caption = serializer.captions(example)
    if caption is not None:
      _writer(writers, "captions", base + ".captions").write(caption)
    data = serializer.record(example)
    _writer(writers, "records", base).write(data)
    length += 1
    num_bytes += len(data)
    for task, n in records.item_counts(example).items():
      counts.setdefault(task, []).append(n)
  for w in writers.values():
    w.close()
  result = ShardResult(shard.split, shard.index, base if "records" in writers else None,
                       base + ".captions" if "captions" in writers else None, length,
                       num_bytes, counts, skipped, error, time.process_time() - start)
  out = plan_path[:-len(".plan")] + ".result"
  with open(out + ".tmp", "wb") as f:
    pickle.dump(result, f, protocol=pickle.HIGHEST_PROTOCOL)
  os.rename(out + ".tmp", out)  # a retried bundle overwrites; a half-written result never shows
  return out


class _BadRow(Exception):
  """A record that cannot be written: `error` is what the single-process build raises."""

  def __init__(self, error: BaseException, skippable: bool):
    super().__init__(str(error))
    self.error, self.skippable = error, skippable


def _with_image(example: Dict, builder, stores: Dict) -> Dict:
  """`example` with its deferred image read, decoded and converted (as the builder would).

  `stores`: the LMDB / per-image-file stores this worker opened, by path.
  """
  if records.DEFERRED_IMAGE not in example:
    return example  # built without a feature store (synthetic scenes)
  deferred, cls_prob_width = example[records.DEFERRED_IMAGE]
  config = builder.builder_config
  if deferred.tsv_line is not None:
    raw = read_line(*deferred.tsv_line, config.feature_dim)
  else:
    if deferred.store not in stores:
      stores[deferred.store] = open_feature_store(deferred.store, config.feature_dim)
    raw = stores[deferred.store].raw(deferred.image_id)
  try:  # bad rows are skippable and named as in store_reader.images
    image = raw()
  except FeatureStoreError as e:
    raise _BadRow(e, skippable=True) from e
  problem = records.storage_problem(image, config, cls_prob_width)
  if problem is not None:
    raise _BadRow(FeatureStoreError(f"{raw.where} (image_id {image.image_id}): {problem}"),
                  skippable=True)
  image_part = records.image_example(image, config, cls_prob_width)
  return {**image_part, **{k: v for k, v in example.items() if k != records.DEFERRED_IMAGE}}


def _writer(writers: Dict, kind: str, path: str):
  if kind not in writers:
    writers[kind] = tfds_io.open_writer(path)
  return writers[kind]


_PLANNED = "planned"  # file in the plans folder listing the plan files, once planning ended


class _Pipeline:
  """The Beam pipeline of a build, started before the planner so that its workers start (a
  local worker process imports Beam for ~1 s; cluster workers take minutes) while the planner
  runs; it runs one `write_shard` per plan file.

  Its first step (`_planned_shards`, one work item) waits for the planner's list of plan files
  (`publish`); a reshuffle then spreads the plan files over the workers.
  """

  def __init__(self, plan_dir: str, beam_options: Sequence[str]):
    import apache_beam as beam  # pylint: disable=import-outside-toplevel  (the beam extra)
    self.plan_dir = plan_dir
    self._error: Optional[BaseException] = None
    pipeline = beam.Pipeline(options=beam.options.pipeline_options.PipelineOptions(
        list(beam_options)))
    _ = (pipeline | "PlanFolder" >> beam.Create([plan_dir])
         | "Shards" >> beam.FlatMap(_planned_shards) | "Spread" >> beam.Reshuffle()
         | "Write" >> beam.Map(write_shard))
    self._thread = threading.Thread(target=self._run, args=(pipeline,), daemon=True)
    self._thread.start()

  def _run(self, pipeline) -> None:
    try:
      pipeline.run().wait_until_finish()
    except BaseException as e:  # pylint: disable=broad-except  (re-raised by `wait`)
      self._error = e

  def publish(self, plan_paths: Sequence[str]) -> None:
    """Hands the plan files to the pipeline (written atomically: the waiting step never reads
    half a list)."""
    path = os.path.join(self.plan_dir, _PLANNED)
    with open(path + ".tmp", "w") as f:
      f.write("".join(f"{p}\n" for p in plan_paths))
    os.rename(path + ".tmp", path)

  def wait(self, raise_error: bool = True) -> None:
    """Returns when the pipeline has ended; raises what made it fail if `raise_error`."""
    self._thread.join()
    if self._error is not None and raise_error:
      raise self._error


def _planned_shards(plan_dir: str) -> Iterator[str]:
  """The plan files, once the planner has published them (see `_Pipeline`)."""
  path = os.path.join(plan_dir, _PLANNED)
  while not os.path.exists(path):
    time.sleep(0.05)  # seconds; planning takes seconds to minutes
  with open(path) as f:
    yield from f.read().splitlines()


def _finish(builder, tmp: epath.Path, final: epath.Path, splits: Sequence[str],
            results: Sequence[ShardResult]) -> None:
  """Joins the workers' shards per split and finishes as the single-process build does."""
  done = {}
  for split in splits:
    mine = sorted((r for r in results if r.split == split), key=lambda r: r.index)
    written = [r for r in mine if r.path is not None]
    counts: Dict[str, List[int]] = {}
    for r in written:
      for task, n in r.counts.items():
        counts.setdefault(task, []).extend(n)
    parts = [r.captions for r in written if r.captions is not None]
    if parts:
      _join(parts, tfds_io.captions_path(tmp, builder.name, split))
    done[split] = ([r.path for r in written], [r.length for r in written],
                   sum(r.num_bytes for r in written), counts)
  for path in glob.glob(os.path.join(tmp, _PLANS, "*")):
    os.remove(path)
  os.rmdir(os.path.join(tmp, _PLANS))
  tfds_io.finish(builder, tmp, final, done)


def _join(parts: Sequence[str], out: str) -> None:
  """Concatenates array_record files (the small captions parts) into `out`, in order."""
  from array_record.python import array_record_module  # pylint: disable=import-outside-toplevel
  writer = tfds_io.open_writer(out)
  for part in parts:
    reader = array_record_module.ArrayRecordReader(part)
    for record in reader.read_all():
      writer.write(record)
    reader.close()
    os.remove(part)
  writer.close()


def _load(path: str):
  with open(path, "rb") as f:
    return pickle.load(f)


def parse_pipeline_options(text: Optional[str]) -> List[str]:
  """`--beam_pipeline_options "--project=p --region=r"` -> ["--project=p", "--region=r"]."""
  return shlex.split(text) if text else []

