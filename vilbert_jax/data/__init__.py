"""Data side of vilbert_jax: feature stores, tokenizers, TFDS datasets and grain pipelines.

Typical use (see README.md in this folder):

  name = build_synthetic(data_dir, feature_dim=64)          # or build_dataset("vilbert_vqa2", ...)
  train = open_split(name, data_dir, "train")
  loader = pretraining_loader(train, synthetic_tokenizer(), batch_size=64, seed=0)
  for batch in loader: ...                                   # dict of numpy arrays

The names below are imported on first use: a dataset build (and a Beam worker) imports only
the modules it needs, not grain and JAX.
"""
from typing import TYPE_CHECKING

from vilbert_jax import _lazy

__all__ = [
    "FeatureStoreError", "MaskingConfig", "RegionFeatures", "SentencePieceTokenizer",
    "SplitData", "Tokenizer", "UnsafePickleError", "WordPieceTokenizer", "build_dataset",
    "build_synthetic", "load_tokenizer", "make_loader", "open_feature_store", "open_split",
    "pretraining_loader", "retrieval_eval_data", "synthetic_tokenizer", "task_loader",
]
# Attribute -> its submodule.
__getattr__, __dir__ = _lazy.attributes(__name__, {
    "build_dataset": "build", "build_synthetic": "build",
    "FeatureStoreError": "features", "RegionFeatures": "features",
    "UnsafePickleError": "features", "open_feature_store": "features",
    "MaskingConfig": "masking", "make_loader": "pipeline", "pretraining_loader": "pipeline",
    "retrieval_eval_data": "tasks", "task_loader": "tasks",
    "SplitData": "tfds_io", "open_split": "tfds_io",
    **{name: "tokenizer" for name in ("SentencePieceTokenizer", "Tokenizer",
                                      "WordPieceTokenizer", "load_tokenizer",
                                      "synthetic_tokenizer")}})

if TYPE_CHECKING:
  from vilbert_jax.data.build import build_dataset, build_synthetic  # noqa: F401
  from vilbert_jax.data.features import (FeatureStoreError, RegionFeatures,  # noqa: F401
                                         UnsafePickleError, open_feature_store)
  from vilbert_jax.data.masking import MaskingConfig  # noqa: F401
  from vilbert_jax.data.pipeline import make_loader, pretraining_loader  # noqa: F401
  from vilbert_jax.data.tasks import retrieval_eval_data, task_loader  # noqa: F401
  from vilbert_jax.data.tfds_io import SplitData, open_split  # noqa: F401
  from vilbert_jax.data.tokenizer import (SentencePieceTokenizer, Tokenizer,  # noqa: F401
                                          WordPieceTokenizer, load_tokenizer,
                                          synthetic_tokenizer)
