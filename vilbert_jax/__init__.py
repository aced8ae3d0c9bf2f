"""vilbert_jax: ViLBERT (Lu et al., NeurIPS 2019) in JAX/Flax.

    import vilbert_jax as vj
    cfg = vj.ViLBERTConfig.from_original_json("bert_base_6layer_6conect.json")
    model = vj.ViLBERTForPretraining(cfg)

The names below are imported on first use, so that `import vilbert_jax.data...` (dataset
builds, Beam workers) does not import JAX and Flax.
"""
from typing import TYPE_CHECKING

from vilbert_jax import _lazy

__all__ = [
    "ATTENTION_MAPS", "INTERMEDIATES", "PRESETS", "BackboneOutput", "PretrainingOutput",
    "SingleStreamModel", "TaskOutput", "ViLBERTConfig", "ViLBERTForPretraining",
    "ViLBERTForVLTasks", "ViLBERTModel", "convert", "detection", "losses", "preset",
]
# Attribute -> its submodule (convert, detection, losses are submodules themselves).
__getattr__, __dir__ = _lazy.attributes(__name__, {
    "PRESETS": "config", "ViLBERTConfig": "config", "preset": "config",
    **{name: "model" for name in (
        "ATTENTION_MAPS", "INTERMEDIATES", "BackboneOutput", "PretrainingOutput",
        "SingleStreamModel", "TaskOutput", "ViLBERTForPretraining", "ViLBERTForVLTasks",
        "ViLBERTModel")}})

if TYPE_CHECKING:
  from vilbert_jax import convert, detection, losses  # noqa: F401
  from vilbert_jax.config import PRESETS, ViLBERTConfig, preset  # noqa: F401
  from vilbert_jax.model import (ATTENTION_MAPS, INTERMEDIATES, BackboneOutput,  # noqa: F401
                                 PretrainingOutput, SingleStreamModel, TaskOutput,
                                 ViLBERTForPretraining, ViLBERTForVLTasks, ViLBERTModel)
