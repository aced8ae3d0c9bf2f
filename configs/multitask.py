"""Multi-task training with the 12-in-1 schedule (round-robin updates, dynamic stop-and-go) of
VQA, VCR, RefCOCO+ and Flickr30k retrieval, from a pretrained ViLBERT:

    python launch.py --config configs/multitask.py --workdir /ckpt/multitask \
        --config.init_checkpoint=/ckpt/cc --config.data.data_dir=/data/tfds \
        --config.data.tokenizer=/bert/vocab.txt

Each task's batch, lengths and rate are the paper's (``configs/common.py: FINETUNING``); the
loss of each is scaled by its rate over the smallest (2e-5). ``--config.multitask.order``
chooses the tasks (``'("vqa","refcoco_plus")'``), ``--config.multitask.mode=summed`` the
one-update-per-iteration variant for pods. See ``vilbert_jax/train/multitask.py``.
"""

import dataclasses

import ml_collections

from configs import common
from vilbert_jax.train.stop_and_go import StopAndGoConfig

# Task -> the evaluation metric its stop-and-go controller reads (of its first eval split).
METRICS = {"vqa": "accuracy", "vcr": "q_ar_accuracy", "refcoco_plus": "accuracy",
           "retrieval": "R@1"}


def task_entry(task: str, **overrides) -> ml_collections.ConfigDict:
  """One task of the run: registered task, data, batches, lengths, rate, loss weight, metric
  (defaults: the paper's fine-tuning setting of ``task``)."""
  t = common.FINETUNING[task]
  entry = ml_collections.ConfigDict(dict(
      name=task, dataset=t["dataset"], train_split=t["train_split"],
      eval_splits=t["eval_splits"], batch_size=t["batch_size"], eval_batch_size=0,
      max_text_len=t["max_text_len"], num_visual_tokens=101,
      learning_rate=t["learning_rate"], loss_weight=1.0,
      task_id=0,  # task-token row (model.task_specific_tokens); 0 = the task's 12-in-1 id
      metric=f"{t['eval_splits'][0]}/{METRICS[task]}"))
  entry.update(overrides)
  return entry


def multitask_config(entries: dict[str, ml_collections.ConfigDict],
                     variant: str = "base") -> ml_collections.ConfigDict:
  """A multi-task run of ``entries`` (key -> ``task_entry``, trained in this order)."""
  c = common.finetuning_config("vqa", variant)
  c.task.name = "multitask"
  c.task.head_variant = "12in1"
  c.model.task_specific_tokens = variant != "single_stream"  # 12-in-1: one token per task
  # Set per task (multitask.tasks.<key>.*) in a multi-task run, so absent here.
  for key in ("batch_size", "grad_accum_steps", "eval_every_steps", "masking", "benchmark"):
    del c[key]
  for key in ("name", "train_split", "eval_splits", "max_text_len", "num_visual_tokens"):
    del c.data[key]
  del c.eval["batch_size"], c.eval["num_batches"]
  # The original's multi-task AdamW: no bias correction, eps 1e-6, decay 0.01 (not on biases
  # and LayerNorm), no clipping; warmup-linear. Rates come from the tasks.
  c.optimizer = ml_collections.ConfigDict(dict(warmup_fraction=0.1, b1=0.9, b2=0.999,
                                               eps=1e-6, weight_decay=0.01))
  c.num_epochs = 20.0  # passes over the largest task
  c.num_train_steps = 0  # >0: this many iterations instead
  c.log_every_steps = 50
  c.checkpoint_every_steps = 2000
  c.multitask = ml_collections.ConfigDict(dict(
      order=tuple(entries),
      tasks=ml_collections.ConfigDict(entries),
      mode="per_task",  # or "summed": one update on the weighted sum (pods)
      head_learning_rate=1e-4,  # heads named vil_* in the original
      stop_and_go=ml_collections.ConfigDict(dataclasses.asdict(StopAndGoConfig())),
  ))
  return c


def get_config(variant: str = "base"):
  return multitask_config({task: task_entry(task)
                           for task in ("vqa", "vcr", "refcoco_plus", "retrieval")}, variant)
