"""Flax (linen) modules of ViLBERT; see the README for the file-per-concept tour."""

from vilbert_jax.model.attention import ATTENTION_MAPS
from vilbert_jax.model.encoder import INTERMEDIATES, schedule
from vilbert_jax.model.outputs import BackboneOutput, PretrainingOutput, TaskOutput
from vilbert_jax.model.single_stream import SingleStreamModel
from vilbert_jax.model.vilbert import ViLBERTForPretraining, ViLBERTModel, backbone
from vilbert_jax.model.vl_tasks import ViLBERTForVLTasks
