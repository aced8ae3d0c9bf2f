"""TFDS builders of vilbert_jax's datasets; build them with `python -m tfds_builders.build`."""
