"""Checkpoint converters: original PyTorch ViLBERT <-> Flax, HF BERT -> the text stream,
the bottom-up-attention Faster R-CNN (PyTorch port) -> Flax."""

from vilbert_jax.convert.io import load_state_dict, save_state_dict
from vilbert_jax.convert.original import (detect_task_variant, flax_to_original,
                                          model_for_state_dict, original_to_flax,
                                          unused_tensors)
from vilbert_jax.convert.hf_bert import LoadReport, hf_bert_to_flax
from vilbert_jax.convert.frcnn import ConversionError, frcnn_to_flax
