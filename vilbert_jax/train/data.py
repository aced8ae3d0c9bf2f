"""The pretraining data a run reads: dataset (built if it is the synthetic one), tokenizer,
train/eval loaders, the retrieval pool; and host batches -> global device arrays."""

from __future__ import annotations

import dataclasses
import os
from typing import Mapping, Optional

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh

from vilbert_jax import data as data_lib
from vilbert_jax import sharding
from vilbert_jax.data.masking import MaskingConfig
from vilbert_jax.data.tasks import TASK_TEXT_LENGTHS

SYNTHETIC = "vilbert_synthetic_scenes"


def data_dir(config: ml_collections.ConfigDict) -> str:
  return os.path.expanduser(config.data.data_dir)


def open_dataset(config: ml_collections.ConfigDict, split: str) -> data_lib.SplitData:
  """Opens a split; the synthetic dataset is built first if missing (process 0 builds)."""
  d = config.data
  name = d.name
  if name == SYNTHETIC:
    name = data_lib.build_synthetic(data_dir(config), **d.synthetic.to_dict())
  return data_lib.open_split(name, data_dir(config), split)


def tokenizer(config: ml_collections.ConfigDict) -> data_lib.Tokenizer:
  path = config.data.tokenizer
  if path == "synthetic":
    return data_lib.synthetic_tokenizer()
  if not path:
    raise ValueError("config.data.tokenizer is empty: give a BERT vocab.txt, a SentencePiece "
                     ".model, or 'synthetic'")
  return data_lib.load_tokenizer(os.path.expanduser(path))


def per_process_batch_size(global_batch: int) -> int:
  n = jax.process_count()
  if global_batch % n:
    raise ValueError(f"batch_size={global_batch} is not divisible by {n} processes")
  return global_batch // n


def masking(config: ml_collections.ConfigDict) -> MaskingConfig:
  return MaskingConfig(**config.masking.to_dict())


def reader_options(config: ml_collections.ConfigDict) -> dict:
  """How many processes and threads prepare batches (``pipeline.make_loader``)."""
  return {"worker_count": config.data.worker_count, "read_threads": config.data.read_threads,
          "prefetch": config.data.prefetch}


def task_loader(config: ml_collections.ConfigDict, split: data_lib.SplitData, loader_task: str,
                tok: data_lib.Tokenizer, *, seed: int, batch_size: Optional[int] = None,
                **loader_kwargs):
  """Batches of a downstream task (``data.task_loader``) at the run's lengths; ``batch_size``
  is global (default ``config.batch_size``); ``loader_kwargs``: shuffle, num_epochs,
  drop_remainder."""
  return data_lib.task_loader(
      split, loader_task, tok, batch_size=per_process_batch_size(batch_size or config.batch_size),
      seed=seed, max_text_len=config.data.max_text_len or None,
      num_visual_tokens=config.data.num_visual_tokens, **reader_options(config), **loader_kwargs)


def pretraining_loader(config: ml_collections.ConfigDict, split: data_lib.SplitData,
                       tok: data_lib.Tokenizer, *, seed: int, num_epochs=None,
                       shuffle: bool = True):
  return data_lib.pretraining_loader(
      split, tok, batch_size=per_process_batch_size(config.batch_size), seed=seed,
      max_text_len=config.data.max_text_len, num_visual_tokens=config.data.num_visual_tokens,
      masking=masking(config), feature_dtype=config.data.feature_dtype,
      num_epochs=num_epochs, shuffle=shuffle, **reader_options(config))


def to_global(batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """This process's slice of the global batch -> arrays sharded over ``batch``."""
  return {k: jax.make_array_from_process_local_data(sharding.batch_sharding(mesh, v.ndim), v)
          for k, v in batch.items()}


@dataclasses.dataclass(frozen=True)
class RetrievalPool:
  """Captions and images for zero-shot retrieval: caption c belongs to image ``image_index[c]``."""

  captions: dict[str, np.ndarray]
  images: dict[str, np.ndarray]

  @property
  def image_index(self) -> np.ndarray:
    return self.captions["image_index"]


def retrieval_pool(config: ml_collections.ConfigDict, split: data_lib.SplitData,
                   tok: data_lib.Tokenizer) -> RetrievalPool:
  """The first ``eval.retrieval_images`` images of ``split`` and their first
  ``eval.retrieval_captions_per_image`` captions (0 = all of them)."""
  captions, images = data_lib.retrieval_eval_data(
      split, tok, max_text_len=config.data.max_text_len or TASK_TEXT_LENGTHS["retrieval"],
      num_visual_tokens=config.data.num_visual_tokens,
      num_images=config.eval.retrieval_images or None)
  per_image = config.eval.retrieval_captions_per_image or None
  keep = np.concatenate([np.flatnonzero(captions["image_index"] == i)[:per_image]
                         for i in range(len(images["image_feat"]))])
  return RetrievalPool({k: v[keep] for k, v in captions.items()}, images)


def close_iterator(iterator) -> None:
  """Stops a grain iterator's worker processes and frees their shared-memory batches now
  (otherwise Python warns about leaked shared_memory objects at exit)."""
  inner = getattr(iterator, "_iterator", iterator)  # grain.DataLoaderIterator wraps it
  if hasattr(inner, "close"):
    inner.close()
