"""Zero-shot Flickr30k retrieval with the pretraining alignment head (no fine-tuning).

    python launch.py --config configs/zeroshot_flickr30k.py --workdir /tmp/zeroshot \
        --config.mode=eval --config.init_checkpoint=/ckpt/vilbert_cc \
        --config.data.data_dir=/data/tfds --config.data.tokenizer=/bert/vocab.txt

Ranks the 1000 test images for each of the 5000 captions by P(match); R@1/5/10, median rank.
"""

from configs import common


def get_config(arg: str = "base"):
  c = common.finetuning_config("zeroshot_retrieval", arg)
  c.mode = "eval"
  return c
