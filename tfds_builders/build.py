"""Builds one of the datasets in this folder without TensorFlow (the `tfds build` CLI needs it).

  python -m tfds_builders.build vilbert_vqa2 --manual_dir /data/vqa --data_dir ~/tfds \
      [--config default] [--feature_dim 2048] [--float16] [--skip_bad_rows] [--num_workers 8]
      [--beam_runner local --beam_workers 8 | --beam_runner DataflowRunner
       --beam_pipeline_options "--project=... --region=... --temp_location=gs://..."]

or `vilbert-build ...` (same flags) where the package is installed. Prints the dataset folder,
split sizes and any skipped rows. Beam builds: vilbert_jax/data/beam_build.py.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from typing import Optional, Sequence

import tensorflow_datasets as tfds

from vilbert_jax.data import beam_build, tfds_io

from tfds_builders import BUILDERS


def make_builder(name: str, data_dir: str, config: Optional[str] = None,
                 skip_bad_rows: bool = False, num_workers: int = 0, **overrides):
  """Instantiates builder `name`; `overrides` replace fields of its (named or default) config.

  Overrides that change the config rename it to encode them (e.g. "default-feature_dim64"),
  so differently sized builds live side by side under `data_dir`.
  """
  if name not in BUILDERS:
    raise ValueError(f"unknown builder {name!r}; choose one of {', '.join(BUILDERS)}")
  cls = BUILDERS[name]
  base = cls.builder_configs[config or cls.DEFAULT_CONFIG_NAME]
  overrides = {k: v for k, v in overrides.items() if v is not None}  # None = flag not given
  unknown = sorted(k for k in overrides if not hasattr(base, k))
  if unknown:
    raise ValueError(f"{name} configs have no options {unknown}")
  overrides = {k: v for k, v in overrides.items() if getattr(base, k) != v}
  if overrides:
    suffix = "-".join(f"{k}{v}" for k, v in sorted(overrides.items()))
    base = dataclasses.replace(base, name=f"{base.name}-{suffix}",
                               description=f"{base.description} Changed: {suffix}.", **overrides)
  kwargs = ({"skip_bad_rows": skip_bad_rows, "num_workers": num_workers}
            if name != "vilbert_synthetic_scenes" else {})
  return cls(data_dir=data_dir, config=base, file_format="array_record", **kwargs)


def main(argv: Optional[Sequence[str]] = None) -> int:
  """`vilbert-build` / `python -m tfds_builders.build`; `argv` None = the command line."""
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("name", choices=sorted(BUILDERS))
  parser.add_argument("--data_dir", required=True)
  parser.add_argument("--manual_dir")
  parser.add_argument("--config")
  parser.add_argument("--feature_dim", type=int)
  parser.add_argument("--float16", action="store_true", default=None)
  parser.add_argument("--cls_prob_width", type=int, help="conceptual captions: classes + 1")
  parser.add_argument("--skip_bad_rows", action="store_true")
  parser.add_argument("--num_workers", type=int, default=0,
                      help="processes decoding feature records (0 = this one)")
  parser.add_argument("--beam_runner",
                      help="build as an Apache Beam pipeline: 'local' (--beam_workers "
                      "processes here) or a runner name (DataflowRunner, FlinkRunner, ...)")
  parser.add_argument("--beam_workers", type=int, default=os.cpu_count(),
                      help="worker processes of --beam_runner local")
  parser.add_argument("--beam_pipeline_options", default="",
                      help='further Beam options, passed through: "--project=p --region=r"')
  parser.add_argument("--beam_records_per_shard", type=int, default=500,
                      help="records per shard (one work item) of a Beam build")
  args = parser.parse_args(argv)
  overrides = {"feature_dim": args.feature_dim, "float16": args.float16,
               "cls_prob_width": args.cls_prob_width}
  builder = make_builder(args.name, args.data_dir, args.config, args.skip_bad_rows,
                         args.num_workers, **overrides)
  if args.beam_runner:
    beam_args = beam_build.BuilderArgs(
        args.name, args.data_dir, args.config, args.skip_bad_rows,
        tuple((k, v) for k, v in overrides.items() if v is not None))
    options = beam_build.pipeline_options(
        args.beam_runner, args.beam_workers,
        beam_build.parse_pipeline_options(args.beam_pipeline_options))
    path = beam_build.build(beam_args, args.manual_dir, options, args.beam_records_per_shard)
    builder = tfds.builder_from_directory(path)
  else:
    path = tfds_io.build(builder, args.manual_dir)
  info = builder.info
  print(f"built {path}")
  for split, split_info in info.splits.items():
    print(f"  {split}: {split_info.num_examples} records")
  for line in (info.metadata or {}).get("skipped_rows", []):
    print(f"  skipped: {line}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
