"""Synthetic scenes with a twin of every ViLBERT task (the embedded default dataset)."""
from tfds_builders.vilbert_synthetic_scenes.vilbert_synthetic_scenes_dataset_builder import (
    Builder, SyntheticScenesConfig)

__all__ = ["Builder", "SyntheticScenesConfig"]
