"""Synthetic twin of configs/retrieval_flickr30k.py on the synthetic scenes, from the demo:

    python launch.py --config configs/retrieval_flickr30k_synthetic.py \
        --workdir /tmp/retrieval_flickr30k --config.init_checkpoint=/tmp/vilbert_demo

``:no_pretraining`` trains the same model from scratch.
"""

from configs.synthetic import synthetic_task_config


def get_config(arg: str = "base"):
  return synthetic_task_config("retrieval", arg)
