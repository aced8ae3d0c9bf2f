"""VCR: Q->A and QA->R trained together; Q->A, QA->R and Q->AR accuracy on validation.

    python launch.py --config configs/vcr.py --workdir /ckpt/vcr \
        --config.init_checkpoint=/ckpt/cc --config.data.tokenizer=/bert/vocab.txt

Variants (``:coattn4``, ``:single_stream``, ``:no_pretraining``, ...) and the paper's
hyperparameters: ``configs.common.finetuning_config``; more in the README, "Transfer tasks".
"""

from configs import common


def get_config(arg: str = "base"):
  return common.finetuning_config("vcr", arg)
