"""Data side of vilbert_jax: feature stores, tokenizers, TFDS datasets and grain pipelines.

Typical use (see README.md in this folder):

  name = build_synthetic(data_dir, feature_dim=64)          # or build_dataset("vilbert_vqa2", ...)
  train = open_split(name, data_dir, "train")
  loader = pretraining_loader(train, synthetic_tokenizer(), batch_size=64, seed=0)
  for batch in loader: ...                                   # dict of numpy arrays
"""
from vilbert_jax.data.build import build_dataset, build_synthetic
from vilbert_jax.data.features import (FeatureStoreError, RegionFeatures, UnsafePickleError,
                                       open_feature_store)
from vilbert_jax.data.masking import MaskingConfig
from vilbert_jax.data.pipeline import make_loader, pretraining_loader
from vilbert_jax.data.tasks import retrieval_eval_data, task_loader
from vilbert_jax.data.tfds_io import SplitData, open_split
from vilbert_jax.data.tokenizer import (SentencePieceTokenizer, Tokenizer, WordPieceTokenizer,
                                        load_tokenizer, synthetic_tokenizer)

__all__ = [
    "FeatureStoreError", "MaskingConfig", "RegionFeatures", "SentencePieceTokenizer",
    "SplitData", "Tokenizer", "UnsafePickleError", "WordPieceTokenizer", "build_dataset",
    "build_synthetic", "load_tokenizer", "make_loader", "open_feature_store", "open_split",
    "pretraining_loader", "retrieval_eval_data", "synthetic_tokenizer", "task_loader",
]
