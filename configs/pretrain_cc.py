"""The paper's pretraining: Conceptual Captions, base model (6 co-attention layers) from BERT.

    python launch.py --config configs/pretrain_cc.py --workdir /ckpt/vilbert_cc \
        --config.data.data_dir=/data/tfds --config.data.tokenizer=/bert/vocab.txt \
        --config.init.bert_checkpoint=/bert/model.safetensors

Batch 512, 10 epochs, lr 1e-4 with 10% linear warmup then linear decay (AdamW). The original
code's optimiser: ``--config.optimizer.name=bert_adam --config.init.bert_lr_multiplier=0.1``
(add ``--config.optimizer.weight_decay_grouping=original_inverted`` for its decay grouping).
Variant ``arg``: ``coattn2|coattn4|coattn6|coattn8`` (depth ablation), ``single_stream``,
``bert_large``; e.g. ``--config configs/pretrain_cc.py:coattn4``.
Benchmark of the full-size train step: ``--config.mode=benchmark``.
"""

from configs import common


def get_config(arg: str = "base"):
  c = common.pretraining_config()
  c.model = common.model_config("coattn6" if arg == "base" else arg)
  c.data.name = "vilbert_conceptual_captions"
  return c
