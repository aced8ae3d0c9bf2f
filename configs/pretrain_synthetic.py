"""The embedded default: pretraining a small ViLBERT on the synthetic scenes, on CPU.

    python launch.py --config configs/pretrain_synthetic.py --workdir /tmp/vilbert_demo

Builds the synthetic dataset on first use (about 10 s), trains for a few minutes on 2 CPU
cores and reports held-out losses, accuracies and zero-shot retrieval over 100 images.
Smoke variant: ``--config.num_train_steps=20 --config.eval.retrieval_images=10``.
"""

from configs import common


def get_config():
  c = common.pretraining_config()
  c.model = common.model_config(
      "tiny", vocab_size=81, hidden_size=96, num_attention_heads=4, intermediate_size=192,
      num_hidden_layers=4, v_feature_size=64, v_target_size=21, v_hidden_size=96,
      v_num_attention_heads=4, v_intermediate_size=192, v_num_hidden_layers=2,
      bi_hidden_size=96, bi_num_attention_heads=4, v_biattention_id=(0, 1),
      t_biattention_id=(2, 3))
  c.data.name = "vilbert_synthetic_scenes"
  c.data.tokenizer = "synthetic"
  c.data.synthetic.feature_dim = 64
  c.batch_size = 64
  c.num_train_steps = 1200
  c.optimizer.learning_rate = 1e-3
  c.log_every_steps = 50
  c.eval_every_steps = 400
  c.checkpoint_every_steps = 400
  c.eval.num_batches = 8
  c.eval.retrieval_images = 100
  return c
