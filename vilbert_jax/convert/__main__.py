"""Converts a checkpoint into a vilbert_jax params directory (Orbax + model.json).

Original ViLBERT (pretraining or task model; config = its released JSON):
    python -m vilbert_jax.convert original --checkpoint pytorch_model_9.bin \
        --config bert_base_6layer_6conect.json --output /ckpt/vilbert_base
HF BERT into the text stream of a fresh ViLBERT (the start of pretraining):
    python -m vilbert_jax.convert hf_bert --checkpoint bert-base-uncased/model.safetensors \
        --config bert_base_6layer_6conect.json --output /ckpt/vilbert_from_bert
``--config`` also takes a preset name (base, coattn2, ..., tiny; see vilbert_jax.PRESETS).
The bottom-up-attention Faster R-CNN (PyTorch port; config = the checkpoint's config.yaml):
    python -m vilbert_jax.convert frcnn --checkpoint pytorch_model.bin --config config.yaml \
        --output /ckpt/frcnn_vg
"""

from __future__ import annotations

import argparse
import logging
import pathlib
import sys

import jax
import jax.numpy as jnp

from vilbert_jax.config import PRESETS, ViLBERTConfig, preset
from vilbert_jax.detection.checkpoint import save_detector
from vilbert_jax.detection.config import DetectorConfig
from vilbert_jax.convert.frcnn import frcnn_to_flax
from vilbert_jax.convert.hf_bert import hf_bert_to_flax
from vilbert_jax.convert.io import load_state_dict
from vilbert_jax.convert.original import model_for_state_dict, original_to_flax
from vilbert_jax.model.vilbert import ViLBERTForPretraining
from vilbert_jax.params_io import ModelSpec, save_params


def _config(value: str) -> ViLBERTConfig:
  if value in PRESETS:
    return preset(value)
  if not pathlib.Path(value).exists():
    raise SystemExit(f"--config {value!r} is neither a preset ({sorted(PRESETS)}) nor a file")
  return ViLBERTConfig.from_original_json(value)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m vilbert_jax.convert", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("source", choices=("original", "hf_bert", "frcnn"))
  parser.add_argument("--checkpoint", required=True, help=".bin/.pth/.pt/.safetensors/.npz")
  parser.add_argument("--config", required=True,
                      help="original JSON config or preset name; frcnn: its config.yaml")
  parser.add_argument("--output", required=True, help="new directory to write")
  parser.add_argument("--seed", type=int, default=0, help="init seed of fresh params (hf_bert)")
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(message)s")
  if args.source == "frcnn":
    detector_cfg = DetectorConfig.from_yaml(pathlib.Path(args.config))
    params = frcnn_to_flax(load_state_dict(args.checkpoint), detector_cfg)
    print(f"wrote {save_detector(args.output, params, detector_cfg)}")
    return 0
  cfg = _config(args.config)
  state = load_state_dict(args.checkpoint)
  if args.source == "original":
    model = model_for_state_dict(state, cfg)
    params = original_to_flax(state, cfg)
  else:
    model = ViLBERTForPretraining(cfg)
    ids = jnp.zeros((1, 2), jnp.int32)
    init = jax.jit(model.init)(jax.random.key(args.seed), ids, None, None,
                               jnp.zeros((1, 2, cfg.v_feature_size)), jnp.zeros((1, 2, 5)))
    params, report = hf_bert_to_flax(state, cfg, init["params"])
    print(report.summary())
  out = save_params(args.output, params, ModelSpec.of(model))
  print(f"wrote {out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
