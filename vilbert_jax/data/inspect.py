"""Look at data before training on it: check a feature store, or print a built record.

  python -m vilbert_jax.data.inspect store PATH [--feature_dim 2048] [--limit 1000]
  python -m vilbert_jax.data.inspect dataset NAME --data_dir D [--split train] [--index 0]

`store` decodes every record (or the first `--limit`) with all the checks a build applies and
lists the bad ones by file and row, so a long build does not stop halfway. `dataset` prints one
built record: image size, boxes, feature statistics and the items of each task.
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional, Sequence

import numpy as np

from vilbert_jax.data import records, tfds_io
from vilbert_jax.data.features import FeatureStoreError, open_feature_store


def check_store(path: str, feature_dim: Optional[int] = None,
                limit: Optional[int] = None) -> List[str]:
  """Decodes the records of a store; prints a summary and returns the bad rows' messages."""
  store = open_feature_store(path, feature_dim)
  try:
    image_ids = store.keys()[:limit]
  except FeatureStoreError as e:  # e.g. an image id stored twice: the store cannot be used
    print(f"{path}: {type(store).__name__}, unusable\n  bad: {e}")
    return [str(e)]
  bad, boxes, widths, with_probs = [], [], set(), 0
  for image_id in image_ids:
    try:
      record = store[image_id]
    except (FeatureStoreError, KeyError) as e:
      bad.append(str(e))
      continue
    boxes.append(record.num_boxes)
    widths.add(record.features.shape[1])
    with_probs += record.cls_prob is not None
  print(f"{path}: {type(store).__name__}, {len(image_ids)} records checked, {len(bad)} bad")
  if boxes:
    print(f"  boxes per image: min {min(boxes)}, mean {np.mean(boxes):.1f}, max {max(boxes)}; "
          f"feature widths {sorted(widths)}; with cls_prob: {with_probs}")
  for message in bad:
    print(f"  bad: {message}")
  return bad


def show_record(name: str, data_dir: str, split: str = "train", index: int = 0) -> None:
  """Prints one record of a built dataset and its task items."""
  data = tfds_io.open_split(name, data_dir, split)
  record = data.records[index]
  features = np.asarray(record["features"], np.float32)
  print(f"{data.name} record {index} of {len(data)}: image_id "
        f"{record['image_id'].decode()}, {record['image_w']}x{record['image_h']} pixels")
  print(f"  {len(features)} regions, features {features.shape} {record['features'].dtype} "
        f"(min {features.min():.3g}, mean {features.mean():.3g}, max {features.max():.3g})")
  for box in np.asarray(record["boxes"])[:3]:
    print(f"  box {np.round(box, 1).tolist()}")
  if "cls_prob" in record:
    top = np.asarray(record["cls_prob"]).argmax(1)
    print(f"  top detector classes of the first regions: {top[:10].tolist()}")
  for task, field in records.ITEM_FIELDS.items():
    if field in record:
      print(f"  {task}: {[v.decode() for v in record[field]]}")


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  commands = parser.add_subparsers(dest="command", required=True)
  store = commands.add_parser("store", help="check every record of a feature store")
  store.add_argument("path")
  store.add_argument("--feature_dim", type=int)
  store.add_argument("--limit", type=int)
  dataset = commands.add_parser("dataset", help="print a record of a built dataset")
  dataset.add_argument("name")
  dataset.add_argument("--data_dir", required=True)
  dataset.add_argument("--split", default="train")
  dataset.add_argument("--index", type=int, default=0)
  args = parser.parse_args(argv)
  if args.command == "store":
    return 1 if check_store(args.path, args.feature_dim, args.limit) else 0
  show_record(args.name, args.data_dir, args.split, args.index)
  return 0


if __name__ == "__main__":
  sys.exit(main())
