"""Flickr30k caption-based image retrieval: R@1/5/10, median rank on the test split
(1000 images x 5000 captions).

    python launch.py --config configs/retrieval_flickr30k.py --workdir /ckpt/retrieval_flickr30k \
        --config.init_checkpoint=/ckpt/cc --config.data.tokenizer=/bert/vocab.txt

Variants (``:coattn4``, ``:single_stream``, ``:no_pretraining``, ...) and the paper's
hyperparameters: ``configs.common.finetuning_config``; more in the README, "Transfer tasks".
"""

from configs import common


def get_config(arg: str = "base"):
  return common.finetuning_config("retrieval", arg)
