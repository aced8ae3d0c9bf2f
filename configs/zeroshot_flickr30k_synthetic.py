"""Synthetic twin of configs/zeroshot_flickr30k.py on the synthetic scenes
(minutes on 2 CPU cores).

    python launch.py --config configs/zeroshot_flickr30k_synthetic.py \
        --workdir /tmp/zeroshot_flickr30k_synthetic --config.init_checkpoint=/tmp/vilbert_demo

``/tmp/vilbert_demo`` is the workdir of the demo (configs/pretrain_synthetic.py).
"""

from configs.synthetic import synthetic_task_config


def get_config(arg: str = "base"):
  c = synthetic_task_config("zeroshot_retrieval", arg)
  c.mode = "eval"
  return c
