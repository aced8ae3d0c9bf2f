"""Flickr30k caption-based image retrieval: R@1/5/10 and median rank, ranking the 1000 test
images for each of the 5000 captions.

    python launch.py --config configs/retrieval_flickr30k.py --workdir /ckpt/retrieval_flickr30k \
        --config.init_checkpoint=/ckpt/vilbert_cc --config.data.data_dir=/data/tfds \
        --config.data.tokenizer=/bert/vocab.txt

Paper hyperparameters (``configs.common.FINETUNING``; 20 epochs, 10% warmup then linear decay).
Evaluate a checkpoint, or a converted released model given as init_checkpoint, with
``--config.mode=eval``. Variants ``arg``: ``coattn2|coattn4|coattn6|coattn8``, ``single_stream``
(start from a checkpoint pretrained with that model) or ``no_pretraining`` (BERT only:
``--config.init.bert_checkpoint=...``), e.g. ``--config configs/retrieval_flickr30k.py:coattn4``.
Released 12-in-1 heads: ``--config.task.head_variant=12in1``.
"""

from configs import common


def get_config(arg: str = "base"):
  return common.finetuning_config("retrieval", arg)
