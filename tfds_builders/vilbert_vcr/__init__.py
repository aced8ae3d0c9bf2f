"""VCR multiple-choice items over region features."""
from tfds_builders.vilbert_vcr.vilbert_vcr_dataset_builder import Builder

__all__ = ["Builder"]
