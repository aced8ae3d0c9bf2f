"""Data side of vilbert_jax: feature stores, tokenizers, TFDS builders support, grain pipelines."""
