"""Building blocks shared by the experiment configs (each config file documents its command).

Every field below can be overridden from the command line, e.g. ``--config.batch_size=256``.
"""

from __future__ import annotations

import dataclasses

import ml_collections

import vilbert_jax as vj
from vilbert_jax.data.masking import MaskingConfig


def model_config(preset: str, **overrides) -> ml_collections.ConfigDict:
  """All ViLBERTConfig fields of a preset (``vj.PRESETS``), so each can be overridden."""
  fields = dataclasses.asdict(vj.preset(preset, **overrides))
  return ml_collections.ConfigDict(fields)


def optimizer_config(**overrides) -> ml_collections.ConfigDict:
  """AdamW, linear warmup over 10% then linear decay (the paper)."""
  opt = ml_collections.ConfigDict(dict(
      name="adamw",  # "adamw" or "bert_adam" (the original code's optimiser)
      learning_rate=1e-4,
      schedule="warmup_linear_decay",  # or "warmup_constant_steps" (x decay_factor at decay_steps)
      warmup_fraction=0.1,
      decay_steps=(),
      decay_factor=0.1,
      b1=0.9, b2=0.999, eps=1e-6,
      weight_decay=0.01,
      weight_decay_grouping="standard",  # or "original_inverted" (the released script's bug)
      clip_global_norm=1.0,  # adamw; 0 disables
      clip_per_tensor_norm=1.0,  # bert_adam
      lr_multipliers=(),  # ((regex, factor), ...) on parameter paths; first match wins
      frozen=(),  # (regex, ...) parameters kept exactly fixed
  ))
  opt.update(overrides)
  return opt


def pretraining_config() -> ml_collections.ConfigDict:
  """Defaults of a pretraining run; experiment files change what differs."""
  c = ml_collections.ConfigDict()
  c.mode = "train"  # "train", "eval" or "benchmark"
  c.seed = 0
  c.model = model_config("base")
  c.data = ml_collections.ConfigDict(dict(
      name="vilbert_conceptual_captions",
      data_dir="~/tensorflow_datasets",
      tokenizer="",  # vocab.txt (WordPiece) or .model (SentencePiece); "synthetic" = shipped
      train_split="train",
      eval_split="validation",
      max_text_len=36,
      num_visual_tokens=37,  # 36 regions + IMG
      worker_count=0,  # grain worker processes
      synthetic=ml_collections.ConfigDict(dict(feature_dim=128, num_classes=20,
                                               num_train=5000, num_validation=500,
                                               num_test=500)),
  ))
  c.masking = ml_collections.ConfigDict(dataclasses.asdict(MaskingConfig()))
  c.batch_size = 512  # global, over all processes
  c.grad_accum_steps = 1
  c.num_epochs = 10.0
  c.num_train_steps = 0  # >0 overrides num_epochs
  c.optimizer = optimizer_config()
  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
  c.log_every_steps = 100
  c.eval_every_steps = 5000  # 0: only at the end
  c.checkpoint_every_steps = 5000
  c.keep_checkpoints = 3
  c.eval = ml_collections.ConfigDict(dict(num_batches=20, retrieval_images=100,
                                          retrieval_captions_per_image=1))
  c.init = ml_collections.ConfigDict(dict(
      bert_checkpoint="",  # HF BERT safetensors/bin: text stream initialised from it
      vilbert_checkpoint="",  # a params directory from python -m vilbert_jax.convert
      bert_lr_multiplier=1.0,  # the original used 0.1 on BERT-initialised parameters
  ))
  c.benchmark = ml_collections.ConfigDict(dict(steps=10, warmup_steps=2, batch_size=8))
  c.distributed = ml_collections.ConfigDict(dict(coordinator_address="", num_processes=0,
                                                 process_id=-1))
  return c
