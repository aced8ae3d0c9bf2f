"""Flickr30k caption-based image retrieval over region features."""
from tfds_builders.vilbert_flickr30k.vilbert_flickr30k_dataset_builder import Builder

__all__ = ["Builder"]
