"""vilbert_jax: ViLBERT (Lu et al., NeurIPS 2019) in JAX/Flax.

    import vilbert_jax as vj
    cfg = vj.ViLBERTConfig.from_original_json("bert_base_6layer_6conect.json")
    model = vj.ViLBERTForPretraining(cfg)
"""

from vilbert_jax import convert, detection, losses
from vilbert_jax.config import PRESETS, ViLBERTConfig, preset
from vilbert_jax.model import (ATTENTION_MAPS, INTERMEDIATES, BackboneOutput, PretrainingOutput,
                               SingleStreamModel, TaskOutput, ViLBERTForPretraining,
                               ViLBERTForVLTasks, ViLBERTModel)

__all__ = [
    "ATTENTION_MAPS", "INTERMEDIATES", "PRESETS", "BackboneOutput", "PretrainingOutput",
    "SingleStreamModel", "TaskOutput", "ViLBERTConfig", "ViLBERTForPretraining",
    "ViLBERTForVLTasks", "ViLBERTModel", "convert", "detection", "losses", "preset",
]
