"""VQA v2: fine-tune on trainval; official accuracy (overall, per answer type) on minval.

    python launch.py --config configs/vqa.py --workdir /ckpt/vqa \
        --config.init_checkpoint=/ckpt/cc --config.data.tokenizer=/bert/vocab.txt

Test-dev file: ``--config.mode=eval --config.data.eval_splits='("test_dev",)'``.
Variants (``:coattn4``, ``:single_stream``, ``:no_pretraining``, ...) and the paper's
hyperparameters: ``configs.common.finetuning_config``; more in the README, "Transfer tasks".
"""

from configs import common


def get_config(arg: str = "base"):
  return common.finetuning_config("vqa", arg)
