"""Synthetic twin of configs/vqa.py on the synthetic scenes
(minutes on 2 CPU cores).

    python launch.py --config configs/vqa_synthetic.py \
        --workdir /tmp/vqa_synthetic --config.init_checkpoint=/tmp/vilbert_demo

``/tmp/vilbert_demo`` is the workdir of the demo (configs/pretrain_synthetic.py).
From scratch, for comparison: ``--config configs/vqa_synthetic.py:no_pretraining``.
"""

from configs.synthetic import synthetic_task_config


def get_config(arg: str = "base"):
  return synthetic_task_config("vqa", arg)
