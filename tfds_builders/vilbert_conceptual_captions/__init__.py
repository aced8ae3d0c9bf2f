"""Conceptual Captions pretraining pairs over region features."""
from tfds_builders.vilbert_conceptual_captions.vilbert_conceptual_captions_dataset_builder import (
    Builder)

__all__ = ["Builder"]
