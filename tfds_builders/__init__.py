"""TFDS builders of vilbert_jax's datasets; build them with `vilbert-build` (or
`python -m tfds_builders.build`).

Importing this package registers every builder with TFDS, so that user code can write
`tfds.builder("vilbert_vqa2", data_dir=...)` or `tfds.data_source("vilbert_vqa2/default",
data_dir=...)` as for any TFDS dataset.
"""
from tfds_builders import (vilbert_conceptual_captions, vilbert_flickr30k, vilbert_refcoco_plus,
                           vilbert_synthetic_scenes, vilbert_vcr, vilbert_vqa2)

BUILDERS = {module.Builder.name: module.Builder for module in (
    vilbert_synthetic_scenes, vilbert_conceptual_captions, vilbert_vqa2, vilbert_flickr30k,
    vilbert_refcoco_plus, vilbert_vcr)}
