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
  # Long runs on CPU: reuse the host memory a step frees instead of page-faulting it in again
  # every step (vilbert_jax/train/host_memory.py: ~7% faster steps of the base model; but
  # compiling is ~25% slower and every thread allocates from one malloc arena).
  c.keep_freed_host_memory = False
  c.task = ml_collections.ConfigDict(dict(
      name="pretraining",  # a name in vilbert_jax.tasks.TASKS
      head_variant="neurips",  # task heads: "neurips" (weight-normed VQA MLP) or "12in1"
      num_answers=3129,  # VQA head size of the other tasks' models (as released)
      # VQA answers in the order of a released head: the original trainval_label2ans.pkl or a
      # JSON list. Empty: the dataset's vocabulary (builder order). Evaluating a released VQA
      # checkpoint needs its own order, or answers come out permuted.
      answer_vocab_file="",
      # Models with 12-in-1 task tokens (model.task_specific_tokens): the task-token row of
      # this task; 0 = the task's own 12-in-1 id (VQA 1, VCR 5, Flickr30k retrieval 8,
      # RefCOCO+ 10). VCR's QA->R pairs use rationale_task_id (0 = 6).
      task_id=0,
      rationale_task_id=0,
  ))
  c.model = model_config("base")
  c.data = ml_collections.ConfigDict(dict(
      name="vilbert_conceptual_captions",
      data_dir="~/tensorflow_datasets",
      tokenizer="",  # vocab.txt (WordPiece) or .model (SentencePiece); "synthetic" = shipped
      train_split="train",
      eval_splits=("validation",),
      max_text_len=36,
      num_visual_tokens=37,  # 36 regions + IMG
      worker_count=0,  # grain worker processes
      read_threads=2,  # threads reading records in each process
      prefetch=16,  # records read ahead per process
      # Pretraining batches' image_feat/image_target: "float16" halves the bytes moved (use
      # with datasets built --float16; max relative error 2e-4 on the model outputs).
      feature_dtype="float32",
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
  # Several processes combine their stop flags (SIGTERM/SIGINT) every this many steps and all
  # stop after the same one (one process stops at the next step).
  c.stop_check_every_steps = 10
  c.eval = ml_collections.ConfigDict(dict(
      num_batches=20,  # pretraining: held-out batches
      batch_size=0,  # global evaluation batch; 0 = batch_size
      retrieval_images=100,  # images ranked per caption (0 = the whole split)
      retrieval_captions_per_image=1,  # 0 = all
      caption_block=16, image_block=32,  # pairs scored per call: caption_block x image_block
  ))
  # A pretrained ViLBERT: a finished run's workdir (its export/) or a params directory from
  # python -m vilbert_jax.convert. Its parameters replace the fresh ones they match.
  c.init_checkpoint = ""
  c.init = ml_collections.ConfigDict(dict(
      bert_checkpoint="",  # HF BERT safetensors/bin: text stream initialised from it
      bert_lr_multiplier=1.0,  # the original used 0.1 on BERT-initialised parameters
      required=False,  # True: training refuses to start without init_checkpoint
  ))
  c.benchmark = ml_collections.ConfigDict(dict(
      steps=10, warmup_steps=2, batch_size=8,
      memory_estimate=False,  # also compile for batch 512 on 8 devices and print its memory
  ))
  c.distributed = ml_collections.ConfigDict(dict(coordinator_address="", num_processes=0,
                                                 process_id=-1))
  return c


# Paper hyperparameters of the transfer tasks (SPEC 6): task -> dataset, splits, batch, lr,
# text length, tokens per image (100 regions + IMG).
FINETUNING = {
    "vqa": dict(dataset="vilbert_vqa2", train_split="trainval", eval_splits=("minval",),
                batch_size=256, learning_rate=4e-5, max_text_len=23),
    "vcr": dict(dataset="vilbert_vcr", train_split="train", eval_splits=("validation",),
                batch_size=64, learning_rate=2e-5, max_text_len=60),
    "refcoco_plus": dict(dataset="vilbert_refcoco_plus", train_split="train",
                         eval_splits=("validation", "testA", "testB"), batch_size=256,
                         learning_rate=4e-5, max_text_len=20),
    "retrieval": dict(dataset="vilbert_flickr30k", train_split="train", eval_splits=("test",),
                      batch_size=64, learning_rate=2e-5, max_text_len=30),
    "zeroshot_retrieval": dict(dataset="vilbert_flickr30k", train_split="train",
                               eval_splits=("test",), batch_size=64, learning_rate=2e-5,
                               max_text_len=30),
}
MODEL_VARIANTS = ("base", "coattn2", "coattn4", "coattn6", "coattn8", "single_stream",
                  "no_pretraining")


def finetuning_config(task: str, variant: str = "base") -> ml_collections.ConfigDict:
  """A transfer task with the paper's hyperparameters, from ``--config.init_checkpoint``.

  ``variant``: ``base`` (6 co-attention layers), ``coattn2|4|6|8`` and ``single_stream`` (the
  ablations; start from a checkpoint pretrained with the same model), or ``no_pretraining``
  (the base model from BERT alone: set ``--config.init.bert_checkpoint``).
  """
  if variant not in MODEL_VARIANTS:
    raise ValueError(f"variant {variant!r}: choose from {MODEL_VARIANTS}")
  t = FINETUNING[task]
  c = pretraining_config()
  c.task.name = task
  preset = {"base": "coattn6", "no_pretraining": "coattn6"}.get(variant, variant)
  c.model = model_config(preset)
  c.data.name = t["dataset"]
  c.data.train_split = t["train_split"]
  c.data.eval_splits = t["eval_splits"]
  c.data.max_text_len = t["max_text_len"]
  c.data.num_visual_tokens = 101
  c.batch_size = t["batch_size"]
  c.num_epochs = 20.0
  # The paper: warmup then linear decay. The original code: warmup, constant, x0.1 at given
  # steps (--config.optimizer.schedule=warmup_constant_steps --config.optimizer.decay_steps=..).
  c.optimizer = optimizer_config(learning_rate=t["learning_rate"])
  c.eval.retrieval_images = 0  # the whole split
  c.eval.retrieval_captions_per_image = 0
  c.eval_every_steps = 0
  c.log_every_steps = 50
  c.checkpoint_every_steps = 2000
  c.init.required = variant != "no_pretraining"
  return c
