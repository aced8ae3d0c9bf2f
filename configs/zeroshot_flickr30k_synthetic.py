"""Synthetic twin of configs/zeroshot_flickr30k.py on the synthetic scenes, from the demo:

    python launch.py --config configs/zeroshot_flickr30k_synthetic.py \
        --workdir /tmp/zeroshot_flickr30k --config.init_checkpoint=/tmp/vilbert_demo
"""

from configs.synthetic import synthetic_task_config


def get_config(arg: str = "base"):
  c = synthetic_task_config("zeroshot_retrieval", arg)
  c.mode = "eval"
  return c
