"""Dataset build throughput: the single-process build against Beam builds with N workers.

  PYTHONPATH=. .venv-beam/bin/python scripts/benchmark_build.py [--num_images 1000]
      [--workers 1,2] [--records_per_shard 50] [--float32] [--work_dir DIR]

Writes the same paper-shaped TSV as scripts/benchmark_data.py (36 boxes x 2048 floats,
1601-way class distributions, one caption per image), then builds `vilbert_conceptual_captions`
from it single-process and with `--beam_runner local --beam_workers N` for each N (1 = in
this process), each into a fresh folder, and prints a table of examples/s with the CPU time
per record of all processes and the load average before each run (wall-clock numbers mean
little on busy cores; the CPU time depends little on the load), then where each Beam build's
CPU time went, per record: the planner (which includes the TSV index pass; that pass alone is
timed once more on its own, the single-process build does it too), the launching process
during the pipeline (Beam's runner, and importing Beam on the first Beam build), the workers'
start-up and shut-down (their CPU outside `write_shard`), the workers' shards, the finish.
Beam needs the environment of requirements-beam.txt (README, "Distributed builds").
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
import time

from benchmark_data import write_inputs
from tfds_builders.build import make_builder
from vilbert_jax.data import beam_build, tfds_io
from vilbert_jax.data.features import TsvFeatureStore

NAME = "vilbert_conceptual_captions"


def _cpu_seconds() -> float:
  """CPU time of this process and its finished children (Beam's worker processes)."""
  own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(
      resource.RUSAGE_CHILDREN)
  return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _timed(fn) -> tuple:
  """(wall seconds, CPU seconds) of `fn()`."""
  start, cpu = time.perf_counter(), _cpu_seconds()
  fn()
  return time.perf_counter() - start, _cpu_seconds() - cpu


def _num_lines(path: str) -> int:
  """Lines of `path` (0 if it does not exist)."""
  if not os.path.exists(path):
    return 0
  with open(path, "rb") as f:
    return sum(1 for _ in f)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--num_images", type=int, default=1000)
  parser.add_argument("--workers", default="1,2", help="Beam worker counts to time")
  parser.add_argument("--records_per_shard", type=int, default=50)
  parser.add_argument("--float32", action="store_true", help="store float32 (default float16)")
  parser.add_argument("--work_dir", help="scratch folder, kept; inputs written there for the "
                      "same --num_images are reused (default: a temp dir, removed)")
  args = parser.parse_args()
  work = args.work_dir or tempfile.mkdtemp(prefix="vilbert_build_bench_")
  manual = os.path.join(work, "manual")
  os.makedirs(manual, exist_ok=True)
  tsv = os.path.join(manual, "features_train.tsv")
  if _num_lines(os.path.join(manual, "captions_train.tsv")) != args.num_images:
    write_inputs(manual, args.num_images)
  with open(tsv, "rb") as f:  # into the page cache, so that no run pays for a cold read
    while f.read(1 << 24):
      pass
  options = {"float16": not args.float32, "feature_dim": 2048, "cls_prob_width": 1601}
  print(f"{args.num_images} images, {os.path.getsize(tsv) / 2**20:.0f} MiB TSV, "
        f"{'float32' if args.float32 else 'float16'} records, {os.cpu_count()} cores")
  rows, phases = [], []
  per_record = lambda seconds: 1000 * seconds / args.num_images  # ms per record

  def run(label, build):
    data_dir = os.path.join(work, "tfds")
    load = os.getloadavg()[0]
    seconds, cpu = _timed(lambda: build(data_dir))
    shutil.rmtree(data_dir)
    rows.append((label, seconds, args.num_images / seconds, load, per_record(cpu)))

  run("single process", lambda d: tfds_io.build(make_builder(NAME, d, **options), manual))
  for workers in map(int, args.workers.split(",")):
    profile = {}
    label = f"beam, {workers} worker{'s' if workers > 1 else ''}"
    run(label, lambda d: beam_build.build(
        beam_build.BuilderArgs(NAME, d, None, False, tuple(options.items())), manual,
        beam_build.pipeline_options("local", workers), args.records_per_shard, profile))
    in_process = workers == 1  # the shards run in this process, no worker processes
    launcher = profile["pipeline_cpu"] - (profile["shard_cpu"] if in_process else 0.0)
    start_stop = 0.0 if in_process else profile["pipeline_children_cpu"] - profile["shard_cpu"]
    phases.append((label, profile["plan_cpu"], launcher, start_stop, profile["shard_cpu"],
                   profile["finish_cpu"]))
  _, index_cpu = _timed(lambda: TsvFeatureStore([tsv]).keys())
  print("| build | seconds | examples/s | vs single process | CPU ms / record (all "
        "processes) | load average before |")
  print("|---|---|---|---|---|---|")
  for label, seconds, rate, load, cpu_ms in rows:
    print(f"| {label} | {seconds:.1f} | {rate:.0f} | {rate / rows[0][2]:.2f}x | {cpu_ms:.2f} | "
          f"{load:.1f} |")
  print(f"\nCPU ms / record by phase (the TSV index pass alone: {per_record(index_cpu):.2f})")
  print("| build | planner | launcher during pipeline | workers: start-up, shut-down | "
        "workers: shards | finish |")
  print("|---|---|---|---|---|---|")
  for label, *cpu in phases:
    print(f"| {label} | " + " | ".join(f"{per_record(c):.2f}" for c in cpu) + " |")
  if not args.work_dir:
    shutil.rmtree(work)


if __name__ == "__main__":
  main()
