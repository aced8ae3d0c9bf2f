"""VQA v2 over region features."""
from tfds_builders.vilbert_vqa2.vilbert_vqa2_dataset_builder import Builder

__all__ = ["Builder"]
