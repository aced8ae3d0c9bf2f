"""The synthetic-scenes setting shared by the demo and the synthetic twins of the tasks."""

import ml_collections

from configs import common


def synthetic_model() -> ml_collections.ConfigDict:
  """The demo's 128-wide model (4 text, 2 visual layers, co-attention after text layers 2, 3)."""
  return common.model_config(
      "tiny", vocab_size=81, hidden_size=128, num_attention_heads=4, intermediate_size=256,
      num_hidden_layers=4, v_feature_size=64, v_target_size=21, v_hidden_size=128,
      v_num_attention_heads=4, v_intermediate_size=256, v_num_hidden_layers=2,
      bi_hidden_size=128, bi_num_attention_heads=4, v_biattention_id=(0, 1),
      t_biattention_id=(2, 3),
      # No dropout: 5,000 synthetic scenes are seen only a few times in this budget.
      hidden_dropout_prob=0.0, v_hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
      v_attention_probs_dropout_prob=0.0)


def use_synthetic_data(c: ml_collections.ConfigDict) -> None:
  """Points ``c`` at the synthetic scenes (built on first use) with the shipped tokenizer."""
  c.data.name = "vilbert_synthetic_scenes"
  c.data.tokenizer = "synthetic"
  c.data.synthetic.feature_dim = 64
  # Synthetic captions have at most 15 tokens and scenes keep 10-12 confident regions.
  c.data.max_text_len = 16
  c.data.num_visual_tokens = 13
  c.data.worker_count = 2  # grain workers prepare batches while the step runs


# Task -> (batch size, steps, text length): sized to run in a few minutes on 2 CPU cores.
_TWINS = {
    "vqa": (64, 600, 16),
    "vcr": (16, 600, 32),  # 8 (question, option) pairs per item; QA->R texts are longest
    "refcoco_plus": (64, 150, 16),  # both runs reach 99% by step 300; 150 shows the gap
    "retrieval": (16, 600, 16),  # 4 pairs per item
    "zeroshot_retrieval": (64, 0, 16),
}


def synthetic_task_config(task: str, variant: str = "base") -> ml_collections.ConfigDict:
  """The synthetic twin of a transfer task, fine-tuning the demo's pretrained model.

  ``variant``: ``base`` needs ``--config.init_checkpoint`` (the demo's workdir);
  ``no_pretraining`` trains the same model from scratch, for comparison.
  """
  if variant not in ("base", "no_pretraining"):
    raise ValueError(f"synthetic variant {variant!r}: choose 'base' or 'no_pretraining'")
  c = common.finetuning_config(task, variant)
  c.model = synthetic_model()
  use_synthetic_data(c)
  batch_size, steps, text_len = _TWINS[task]
  c.data.train_split, c.data.eval_splits = "train", ("validation",)
  c.data.max_text_len = text_len
  c.batch_size = batch_size
  c.num_train_steps = steps
  c.optimizer.learning_rate = 2e-4
  c.log_every_steps = 50
  c.checkpoint_every_steps = 300
  c.eval.batch_size = 64
  c.eval.retrieval_images = 100
  c.eval.retrieval_captions_per_image = 1
  return c
