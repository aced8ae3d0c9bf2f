"""Retrieval evaluation throughput: (caption, image) pairs scored per second.

  python scripts/benchmark_retrieval.py --preset tiny --captions 64 --images 64
  python scripts/benchmark_retrieval.py --preset base --captions 16 --images 32

Scores every caption against every image with `vilbert_jax.eval.retrieval.PairScorer` (text
prefix once per caption, blocks of images against it, one jitted function) on random inputs of
the Flickr30k shapes (30 tokens, 101 visual tokens), after one untimed call that compiles.
Prints one JSON line: pairs/s, the XLA-counted FLOPs per pair, the projected time of the full
Flickr30k test split (5000 captions x 1000 images) at the measured rate, and on an H100 in
bfloat16 at the given model-FLOPs utilisation.
"""
from __future__ import annotations

import json
import os
import sys
import time

from absl import app, flags
import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import vilbert_jax as vj  # noqa: E402
from vilbert_jax.eval.retrieval import PairScorer  # noqa: E402
from vilbert_jax.model.inputs import IMAGE_INPUTS, TEXT_INPUTS  # noqa: E402

_PRESET = flags.DEFINE_string("preset", "tiny", "model preset (vj.PRESETS)")
_CAPTIONS = flags.DEFINE_integer("captions", 64, "captions timed")
_IMAGES = flags.DEFINE_integer("images", 64, "images timed")
_CAPTION_BLOCK = flags.DEFINE_integer("caption_block", 16, "captions per scoring call")
_IMAGE_BLOCK = flags.DEFINE_integer("image_block", 32, "images per scoring call")
_TEXT_LEN = flags.DEFINE_integer("text_len", 30, "tokens per caption")
_VISUAL = flags.DEFINE_integer("num_visual_tokens", 101, "regions + IMG per image")
_MFU = flags.DEFINE_float("gpu_mfu", 0.4, "assumed model-FLOPs utilisation for the projection")

FULL_SPLIT_PAIRS = 5000 * 1000
H100_BF16_PEAK = 989e12


def random_inputs(cfg, num_captions: int, num_images: int, text_len: int, num_visual: int):
  rng = np.random.default_rng(0)
  captions = {"input_ids": rng.integers(1, cfg.vocab_size, (num_captions, text_len)),
              "token_type_ids": np.zeros((num_captions, text_len)),
              "attention_mask": np.ones((num_captions, text_len))}
  images = {"image_feat": rng.random((num_images, num_visual, cfg.v_feature_size)),
            "image_loc": rng.random((num_images, num_visual, 5)),
            "image_mask": np.ones((num_images, num_visual))}
  as_type = lambda d, t: {k: v.astype(t if k in TEXT_INPUTS + ("image_mask",)  # noqa: E731
                                      else np.float32) for k, v in d.items()}
  return as_type(captions, np.int32), as_type(images, np.int32)


def main(argv):
  del argv
  cfg = vj.preset(_PRESET.value)
  model = vj.ViLBERTForVLTasks(cfg, outputs=("retrieval_score",))
  captions, images = random_inputs(cfg, _CAPTIONS.value, _IMAGES.value, _TEXT_LEN.value,
                                   _VISUAL.value)
  cb, ib = _CAPTION_BLOCK.value, _IMAGE_BLOCK.value
  params = jax.jit(model.init)(jax.random.key(0), *(v[:1] for v in captions.values()),
                               *(v[:1] for v in images.values()))["params"]
  scorer = PairScorer(model, lambda out: out.retrieval_score, cb, ib)
  start = time.perf_counter()
  scorer(params, {k: v[:cb] for k, v in captions.items()}, {k: v[:ib] for k, v in images.items()})
  compile_s = time.perf_counter() - start
  start = time.perf_counter()
  scorer(params, captions, images)
  seconds = time.perf_counter() - start
  pairs_per_s = _CAPTIONS.value * _IMAGES.value / seconds
  text = {k: captions[k][:cb] for k in TEXT_INPUTS}
  hidden = scorer.prefix(params, text)
  image = {k: images[k][:ib] for k in IMAGE_INPUTS}
  cost = scorer.score_block.lower(params, text, hidden, image).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  flops_per_pair = float(cost["flops"]) / (cb * ib)
  gpu_s = FULL_SPLIT_PAIRS * flops_per_pair / (H100_BF16_PEAK * _MFU.value)
  print(json.dumps({
      "preset": _PRESET.value, "device": jax.devices()[0].device_kind,
      "pairs": _CAPTIONS.value * _IMAGES.value, "pairs_per_s": round(pairs_per_s, 1),
      "compile_s": round(compile_s, 1), "gflops_per_pair": round(flops_per_pair / 1e9, 3),
      "full_split_hours_here": round(FULL_SPLIT_PAIRS / pairs_per_s / 3600, 2),
      "full_split_minutes_h100_projected": round(gpu_s / 60, 2), "assumed_mfu": _MFU.value,
  }))


if __name__ == "__main__":
  app.run(main)
