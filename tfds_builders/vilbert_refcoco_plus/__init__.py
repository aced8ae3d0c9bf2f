"""RefCOCO+ referring expressions over region proposals."""
from tfds_builders.vilbert_refcoco_plus.vilbert_refcoco_plus_dataset_builder import Builder

__all__ = ["Builder"]
