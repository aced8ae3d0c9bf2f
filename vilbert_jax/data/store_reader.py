"""Reading many images from a feature store during a build: skips, parallel decoding."""
from __future__ import annotations

import dataclasses
import itertools
import multiprocessing
from typing import Callable, Iterable, Iterator, List, Optional, Tuple

from vilbert_jax.data.features import (FeatureStoreError, RawRecord, RegionFeatures,
                                       TsvFeatureStore)
from vilbert_jax.data.records import DeferredImage


@dataclasses.dataclass
class SkipLog:
  """Bad rows a build skipped (only when told to skip); reported and saved in metadata."""
  allowed: bool = False
  skipped: List[str] = dataclasses.field(default_factory=list)


def images(store, image_ids: Iterable[str], skips: SkipLog, num_workers: int = 0,
           check: Optional[Callable[[RegionFeatures], Optional[str]]] = None
           ) -> Iterator[Tuple[str, RegionFeatures]]:
  """Yields (image_id, record) from `store` in the order of `image_ids`.

  Bad or missing images raise unless `skips.allowed` (then they are logged and left out).
  `check(record)` returns what makes a decoded record unusable for this dataset (e.g. a
  `cls_prob` of the wrong width), or None; such a record is a bad row like the others, named
  by file, row/key and image id. With `num_workers` > 1, records are decoded (base64,
  unpickling, checks) in that many processes while this one reads raw bytes and consumes the
  results.
  """
  def raws():
    for image_id in image_ids:
      try:
        yield image_id, store.raw(image_id)
      except KeyError as e:
        if not skips.allowed:
          raise
        skips.skipped.append(str(e.args[0]))

  decoded = (_decode_in_pool(raws(), num_workers) if num_workers > 1
             else ((image_id, raw.where, _decode(raw)) for image_id, raw in raws()))
  for image_id, where, result in decoded:
    problem = None if isinstance(result, FeatureStoreError) or check is None else check(result)
    if problem is not None:
      result = FeatureStoreError(f"{where} (image_id {result.image_id}): {problem}")
    if isinstance(result, FeatureStoreError):
      if not skips.allowed:
        raise result
      skips.skipped.append(str(result))
    else:
      yield image_id, result


def deferred(store, store_path: str, image_ids: Iterable[str], skips: SkipLog
             ) -> Iterator[Tuple[str, DeferredImage]]:
  """Like `images`, but yields where each image is instead of decoding it (a Beam build's
  planning pass). Missing images raise or are skipped as in `images`; bad records are found
  by the workers that decode them."""
  for image_id in image_ids:
    try:
      if isinstance(store, TsvFeatureStore):
        line = store.location(image_id)
      else:
        line = None
        if image_id not in store:
          store.raw(image_id)  # raises the store's KeyError naming the image
    except KeyError as e:
      if not skips.allowed:
        raise
      skips.skipped.append(str(e.args[0]))
      continue
    yield image_id, DeferredImage(str(image_id), store_path, line)


def _decode(raw: RawRecord):
  """The decoded record, or the error (returned so it crosses process boundaries intact)."""
  try:
    return raw()
  except FeatureStoreError as e:
    return e


def _decode_in_pool(pairs: Iterator[Tuple[str, RawRecord]], num_workers: int):
  """Decodes windows of records in a process pool, reading the next window meanwhile."""
  window = 32 * num_workers
  with multiprocessing.get_context("spawn").Pool(num_workers) as pool:
    pending, pending_ids = None, []
    while True:
      chunk = list(itertools.islice(pairs, window))
      submitted = pool.map_async(_decode, [raw for _, raw in chunk], chunksize=4)
      if pending is not None:
        yield from ((image_id, where, result)
                    for (image_id, where), result in zip(pending_ids, pending.get()))
      if not chunk:
        return
      pending, pending_ids = submitted, [(image_id, raw.where) for image_id, raw in chunk]
