"""The embedded default: pretraining a small ViLBERT on the synthetic scenes, on CPU.

    python launch.py --config configs/pretrain_synthetic.py --workdir /tmp/vilbert_demo

Builds the synthetic dataset on first use (about 10 s), trains for a few minutes on 2 CPU
cores and reports held-out losses, accuracies and zero-shot retrieval over 100 images.
Smoke variant: ``--config.num_train_steps=20 --config.eval.retrieval_images=10``.

Measured on the 2-core VM: 2 min 50 s in all; held-out masked-word accuracy 0.64 (always
predicting the most frequent masked word: 0.14), masked-region KL 0.80. Alignment accuracy
stays at chance (0.50) and zero-shot R@1 at 1% (chance 1%) at this budget: the alignment
objective has not yet been made to learn within minutes from scratch (see the README).
"""

from configs import common


def get_config():
  c = common.pretraining_config()
  c.model = common.model_config(
      "tiny", vocab_size=81, hidden_size=64, num_attention_heads=4, intermediate_size=128,
      num_hidden_layers=4, v_feature_size=64, v_target_size=21, v_hidden_size=64,
      v_num_attention_heads=4, v_intermediate_size=128, v_num_hidden_layers=2,
      bi_hidden_size=64, bi_num_attention_heads=4, v_biattention_id=(0, 1),
      t_biattention_id=(2, 3))
  c.data.name = "vilbert_synthetic_scenes"
  c.data.tokenizer = "synthetic"
  c.data.synthetic.feature_dim = 64
  # Synthetic captions have at most 15 tokens and scenes keep 10-12 confident regions.
  c.data.max_text_len = 16
  c.data.num_visual_tokens = 13
  c.data.worker_count = 2  # grain workers prepare batches while the step runs
  c.batch_size = 64
  c.num_train_steps = 1500
  c.optimizer.learning_rate = 1e-3
  # From scratch, the query/key gradients of a small model are ~1e-7 per element: BERT's
  # epsilon (1e-6) would swamp them.
  c.optimizer.eps = 1e-9
  c.log_every_steps = 50
  c.eval_every_steps = 500
  c.checkpoint_every_steps = 500
  c.eval.num_batches = 8
  c.eval.retrieval_images = 100
  return c
