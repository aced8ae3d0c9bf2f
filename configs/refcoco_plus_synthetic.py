"""Synthetic twin of configs/refcoco_plus.py on the synthetic scenes, from the demo:

    python launch.py --config configs/refcoco_plus_synthetic.py \
        --workdir /tmp/refcoco_plus --config.init_checkpoint=/tmp/vilbert_demo

``:no_pretraining`` trains the same model from scratch.
"""

from configs.synthetic import synthetic_task_config


def get_config(arg: str = "base"):
  return synthetic_task_config("refcoco_plus", arg)
