"""RefCOCO+: referring-expression grounding; accuracy on validation, testA and testB.

    python launch.py --config configs/refcoco_plus.py --workdir /ckpt/refcoco_plus \
        --config.init_checkpoint=/ckpt/cc --config.data.tokenizer=/bert/vocab.txt

Variants (``:coattn4``, ``:single_stream``, ``:no_pretraining``, ...) and the paper's
hyperparameters: ``configs.common.finetuning_config``; more in the README, "Transfer tasks".
"""

from configs import common


def get_config(arg: str = "base"):
  return common.finetuning_config("refcoco_plus", arg)
