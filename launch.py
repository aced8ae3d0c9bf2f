"""The single entry point of vilbert_jax (``vilbert-launch`` once installed); see
vilbert_jax/launch.py for the commands and flags.

    python launch.py --config configs/pretrain_synthetic.py --workdir /tmp/vilbert_demo
"""
from vilbert_jax.launch import run

if __name__ == "__main__":
  run()
