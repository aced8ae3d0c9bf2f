"""Grain pipelines: task items of a built split -> batches of numpy arrays.

Every pipeline addresses the items of one task (`records.ITEM_FIELDS`) through a flat index,
samples them with a seeded `grain.IndexSampler` (sharded by JAX process), maps each with a
transform whose randomness comes only from `(seed, position in the sampled stream)`, and
batches. Two runs with one seed give identical batches, and a loader iterator's
`get_state()`/`set_state()` resumes the same sequence.

Pretraining batch keys (B = per-process batch size, T = 36, R = 37 with the IMG token at 0,
C = class-distribution width):
  input_ids, token_type_ids, attention_mask  [B,T] int32
  image_feat [B,R,D] float32, image_loc [B,R,5] float32, image_mask [B,R] int32
  masked_lm_labels [B,T] int32 (-1 = ignore)
  image_label [B,R-1] int32 (1 = masked region, -1 otherwise; IMG slot excluded)
  image_target [B,R-1,C] float32 (detector class distribution)
  alignment_label [B] int32 (0 = caption matches the image, 1 = random caption)
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Dict, NamedTuple, Optional, Tuple

import grain.python as grain
import numpy as np

from vilbert_jax.data import masking as masking_lib
from vilbert_jax.data import regions
from vilbert_jax.data.tfds_io import SplitData
from vilbert_jax.data.tokenizer import Tokenizer


class Item(NamedTuple):
  """One task item: the element a transform receives."""

  record_index: int  # Index of its record (image) in the split.
  item: int  # Index of the item among the record's items of the task.
  record: Dict  # The decoded record.
  index: int  # Flat index of the item among all the split's items of the task.


class ItemSource(grain.RandomAccessDataSource):
  """Random access to the items of one task: element = `Item`."""

  def __init__(self, split: SplitData, task: str):
    self.split = split
    self.task = task
    self.index = split.task_items(task)

  def __repr__(self) -> str:  # grain compares it when restoring an iterator state
    return f"ItemSource({self.split.name}, {self.task}, {self.index.total} items)"

  def __len__(self) -> int:
    return self.index.total

  def __getitem__(self, index: int):
    record, item = self.index.locate(int(index))
    return Item(record, item, self.split.records[record], int(index))


def text(value) -> str:
  return value.decode() if isinstance(value, bytes) else str(value)


def image_regions(record: Dict, max_regions: int,
                  dtype: np.dtype = np.float32) -> regions.Regions:
  """The regions of a stored record, at most `max_regions`; features and class distributions
  as `dtype` (views where the stored dtype matches: float16 storage read as float16 moves
  half the bytes).

  A record with at most `max_regions` boxes keeps them all: the extractor already chose them.
  With more, they are chosen by detector confidence as the paper does (`regions.select_boxes`)
  when the record has class distributions, else the first ones are kept. Stored order stays.
  """
  cls_prob = record.get("cls_prob")
  cls_prob = None if cls_prob is None else regions.as_float(cls_prob, dtype)
  n = len(record["boxes"])
  keep = (regions.select_boxes(cls_prob, n, max_boxes=max_regions) if n > max_regions
          else np.arange(n))
  if len(keep) == 0 or keep[-1] == len(keep) - 1:  # a prefix: slice, do not copy
    keep = slice(0, len(keep))
  return regions.Regions(regions.as_float(record["features"], dtype)[keep],
                         np.asarray(record["boxes"], np.float32)[keep],
                         float(record["image_w"]), float(record["image_h"]),
                         None if cls_prob is None else cls_prob[keep])


def split_rng(rng: np.random.Generator, parts: int):
  """Independent generators for the parts of one example, so each part's draws are fixed."""
  return [np.random.default_rng(s) for s in rng.integers(2**63, size=parts)]


@dataclasses.dataclass(frozen=True)
class PretrainingTransform(grain.RandomMapTransform):
  """One (image, caption) item -> one pretraining example; `collate` batches them.

  An example holds the batch keys of the module docstring except the visual inputs, and
  `regions` (`regions.Regions` with the masked rows): `collate` writes those straight into
  the batch's `image_feat`, copying each example's features once.
  grain seeds `rng` from the loader seed and the item's position in the sampled stream; the
  draws are the alignment coin (and negative caption), word masking, then region masking.
  """
  split: SplitData
  tokenizer: Tokenizer
  max_text_len: int = 36
  num_visual_tokens: int = 37
  masking: masking_lib.MaskingConfig = masking_lib.MaskingConfig()
  feature_dtype: str = "float32"  # of image_feat / image_target; "float16" halves the bytes

  def random_map(self, element, rng: np.random.Generator) -> Dict[str, np.ndarray]:
    record_index, item, record, _ = element
    items = self.split.task_items("captions")
    caption = text(record["captions"][item])
    alignment = int(rng.random() < self.masking.negative_prob)
    if alignment:
      caption = self.split.caption(*items.locate(items.other_record_item(rng, record_index)))
    tok = self.tokenizer
    out = tok.encode(caption, self.max_text_len)
    out["input_ids"], out["masked_lm_labels"] = masking_lib.mask_tokens(
        rng, out["input_ids"], tok.special_ids, tok.mask_id, tok.vocab_size, self.masking)
    image = image_regions(record, self.num_visual_tokens - 1, np.dtype(self.feature_dtype))
    if image.cls_prob is None:
      raise ValueError(f"{self.split.name} record {record_index} has no cls_prob; pretraining "
                       "needs the detector class distribution")
    zero_rows, region_labels = masking_lib.mask_regions(rng, len(image.boxes), self.masking)
    out["regions"] = image._replace(zero_rows=zero_rows)  # made visual inputs by `collate`
    out["image_label"] = regions.pad_rows(region_labels, self.num_visual_tokens - 1, -1)
    out["image_target"] = regions.pad_rows(image.cls_prob, self.num_visual_tokens - 1)
    out["alignment_label"] = np.int32(alignment)
    if alignment and not self.masking.masked_loss_on_mismatch:
      out["masked_lm_labels"][:] = -1
      out["image_label"][:] = -1
    return out

  def collate(self, examples) -> Dict[str, np.ndarray]:
    """Examples -> a batch; each example's regions are written into `image_feat` once."""
    batch = {k: np.stack([e[k] for e in examples]) for k in examples[0] if k != "regions"}
    batch.update(regions.visual_batch([e["regions"] for e in examples],
                                      self.num_visual_tokens))
    return batch


def make_loader(split: SplitData, task: str, transform: grain.Transformation, *,
                batch_size: int, seed: int, shuffle: bool = True,
                num_epochs: Optional[int] = None, shard: Optional[Tuple[int, int]] = None,
                worker_count: int = 0, read_threads: int = 2, prefetch: int = 16,
                drop_remainder: bool = True,
                batch_fn: Optional[Callable[[list], Dict]] = None) -> grain.DataLoader:
  """A grain loader over the `task` items of `split`.

  Args:
    batch_size: examples per batch on this process.
    seed: seeds the order and every random choice of the transform.
    num_epochs: None repeats forever.
    shard: (index, count) of this process; None shards by JAX process.
    worker_count: grain worker processes (0 = in this process). Workers need absl flags
      parsed, i.e. a program run under `absl.app.run`.
    read_threads: threads reading and decoding records in each process (transforms run in
      the process's main thread).
    prefetch: records read ahead per process. grain polls every buffered read once per
      element, so a buffer far beyond what the transform consumes costs throughput: 16
      records gave 1,280 examples/s where 256 gave 980 (2 cores, float16 features).
    drop_remainder: drop the last partial batch (and the items that do not divide evenly
      among processes); False for evaluation.
    batch_fn: list of transformed items -> batch (default: stack every array).
  """
  # Evaluation (drop_remainder=False) must see every item: the last shards may be shorter.
  shard_options = (grain.ShardByJaxProcess(drop_remainder=drop_remainder) if shard is None
                   else grain.ShardOptions(shard[0], shard[1], drop_remainder=drop_remainder))
  source = ItemSource(split, task)
  sampler = grain.IndexSampler(num_records=len(source), shard_options=shard_options,
                               shuffle=shuffle, num_epochs=num_epochs, seed=seed)
  return grain.DataLoader(
      data_source=source, sampler=sampler, worker_count=worker_count,
      operations=[transform, grain.Batch(batch_size, drop_remainder=drop_remainder,
                                             batch_fn=batch_fn)],
      read_options=grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=prefetch))


def pretraining_loader(split: SplitData, tokenizer: Tokenizer, *, batch_size: int, seed: int,
                       max_text_len: int = 36, num_visual_tokens: int = 37,
                       masking: masking_lib.MaskingConfig = masking_lib.MaskingConfig(),
                       feature_dtype: str = "float32", **loader_kwargs) -> grain.DataLoader:
  """Pretraining batches (masked words, masked regions, alignment) from a split's captions.

  `feature_dtype` "float16" keeps `image_feat` and `image_target` in float16 (the model and
  the losses cast them); `loader_kwargs` go to `make_loader` (shuffle, num_epochs, shard,
  worker_count, read_threads, prefetch).
  """
  transform = PretrainingTransform(split, tokenizer, max_text_len, num_visual_tokens, masking,
                                   feature_dtype)
  return make_loader(split, "captions", transform, batch_size=batch_size, seed=seed,
                     batch_fn=transform.collate, **loader_kwargs)
