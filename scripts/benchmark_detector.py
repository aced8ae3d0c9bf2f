"""Speed of the region feature extractor: FLOPs per stage, seconds per image, projections.

    nice -n 10 python scripts/benchmark_detector.py                  # full VG size, CPU
    python scripts/benchmark_detector.py --batch 32 --dtype bfloat16  # on a GPU
    python scripts/benchmark_detector.py --smoke                      # tiny, seconds

The full-size architecture (ResNet-101 C4, RPN 512, res5 head, 1600 classes / 400
attributes) with random weights on a 600 x 1000 input (the ``bottom_up`` protocol's largest
landscape bucket is 640 x 1024; this measures the 600 x 1000 image itself), 300 proposals.
The RPN's random box deltas are zeroed (random ones make every proposal empty), so the
proposals are clipped anchors. Stages are jitted separately: backbone (stem..res4), RPN (head + top-k + NMS), RoI head
(RoIPool + res5 + heads), selection (the bottom-up rule), then the whole ``detect``.
FLOPs come from XLA's cost analysis of each compiled stage (multiply-add = 2 FLOPs).

Times are wall seconds and process CPU seconds; on shared cores the CPU seconds divided by
the core count estimate the wall time on an idle machine. Projections to one H100 (SXM:
989 TFLOP/s dense bf16): at 40% MFU, and at the fraction of peak this machine reached from
its CPU seconds (peak = cores x 64 float32 FLOP/cycle (AVX-512, 2 FMA units) x
``--cpu_ghz``; pass the real clock). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from vilbert_jax.detection.config import DetectorConfig
from vilbert_jax.detection.inference import detect
from vilbert_jax.detection.model import FasterRCNN
from vilbert_jax.detection.selection import get_protocol, bottom_up_max_conf

H100_BF16_FLOPS = 989e12
TINY = dict(depth=50, stem_out_channels=8, res2_out_channels=16, width_per_group=4,
            rpn_hidden_channels=16, num_classes=20, num_attrs=10, pre_nms_topk=600)


def _flops(compiled) -> float:
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get("flops", 0.0))


def _time(fn, args, repeats: int) -> tuple[float, float]:
  """(wall seconds, process CPU seconds) per call, after one warm-up call."""
  jax.block_until_ready(fn(*args))
  start, cpu = time.perf_counter(), time.process_time()
  for _ in range(repeats):
    jax.block_until_ready(fn(*args))
  return ((time.perf_counter() - start) / repeats, (time.process_time() - cpu) / repeats)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--smoke", action="store_true",
                      help="tiny model, 192 x 256 input, 50 proposals")
  parser.add_argument("--batch", type=int, default=1)
  parser.add_argument("--height", type=int, default=600)
  parser.add_argument("--width", type=int, default=1000)
  parser.add_argument("--proposals", type=int, default=300)
  parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
  parser.add_argument("--repeats", type=int, default=2)
  parser.add_argument("--cpu_ghz", type=float, default=2.0, help="CPU clock for the peak")
  args = parser.parse_args()
  fields = dict(TINY) if args.smoke else {}
  proposals = 50 if args.smoke else args.proposals
  cfg = DetectorConfig(post_nms_topk=proposals, dtype=args.dtype, **fields)
  h, w = (192, 256) if args.smoke else (args.height, args.width)
  b = args.batch
  model = FasterRCNN(cfg)
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.normal(0, 50, (b, h, w, 3)).astype(np.float32))
  hw = jnp.asarray([[h, w]] * b, jnp.int32)
  scale = jnp.ones((b, 2), jnp.float32)
  params = jax.jit(model.init)(jax.random.key(0), images[:1, :64, :64], hw[:1] * 0 + 64)
  # Random RPN deltas of this size make every proposal empty; zero them so the proposals are
  # the (clipped) anchors and NMS, RoIPool and selection see real, overlapping boxes.
  params = jax.tree.map(lambda x: x, params["params"])
  params["rpn"]["anchor_deltas"] = jax.tree.map(jnp.zeros_like, params["rpn"]["anchor_deltas"])
  protocol = get_protocol("bottom_up", cfg)

  def backbone(p, x, s):
    return model.apply({"params": p}, x, s, method="features")

  def rpn(p, f, s):
    return model.apply({"params": p}, f, s, method="proposals")

  def head(p, f, r):
    return model.apply({"params": p}, f, r, method="box_head")

  def select(boxes, logits, valid):
    probs = jax.nn.softmax(logits, -1)
    return jax.vmap(lambda bx, pr, v: bottom_up_max_conf(bx, pr, v, 0.3))(boxes, probs, valid)

  res4 = jax.jit(backbone)(params, images, hw)
  props = jax.jit(rpn)(params, res4, hw)
  outs = jax.jit(head)(params, res4, props["boxes"])
  stages = {
      "backbone": (backbone, (params, images, hw)),
      "rpn": (rpn, (params, res4, hw)),
      "roi_head": (head, (params, res4, props["boxes"])),
      "selection": (select, (props["boxes"], outs[1], props["valid"])),
      "total": (lambda p, x, s, sc: detect(p, x, s, sc, cfg, protocol),
                (params, images, hw, scale)),
  }
  result = {"device": jax.devices()[0].device_kind, "platform": jax.default_backend(),
            "dtype": args.dtype, "batch": b, "input_hw": [h, w],
            "proposals": cfg.post_nms_topk, "load_average": os.getloadavg(),
            "cpu_count": os.cpu_count(), "seconds_per_image": {}, "cpu_seconds_per_image": {},
            "gflop_per_image": {}}
  for name, (fn, fn_args) in stages.items():
    compiled = jax.jit(fn).lower(*fn_args).compile()
    result["gflop_per_image"][name] = round(_flops(compiled) / b / 1e9, 2)
    wall, cpu = _time(compiled, fn_args, args.repeats)
    result["seconds_per_image"][name] = round(wall / b, 4)
    result["cpu_seconds_per_image"][name] = round(cpu / b, 4)
  if args.dtype == "bfloat16":  # Numeric effect: same params and proposals in float32.
    ref_model = FasterRCNN(cfg.replace(dtype="float32"))
    ref_res4 = jax.jit(lambda p, x, s: ref_model.apply({"params": p}, x, s, method="features"))(
        params, images, hw)
    ref_props = jax.jit(lambda p, f, s: ref_model.apply({"params": p}, f, s,
                                                        method="proposals"))(params, ref_res4, hw)
    boxes = ref_props["boxes"]
    ref_out = jax.jit(lambda p, f, r: ref_model.apply({"params": p}, f, r, method="box_head"))(
        params, ref_res4, boxes)
    out = jax.jit(head)(params, jax.jit(backbone)(params, images, hw), boxes)
    rel = lambda a, b: float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))  # noqa: E731
    result["bf16_vs_fp32"] = {
        "pooled_rel": rel(out[0], ref_out[0]), "cls_logits_rel": rel(out[1], ref_out[1]),
        "cls_prob_max_abs": float(jnp.max(jnp.abs(jax.nn.softmax(out[1]) -
                                                  jax.nn.softmax(ref_out[1])))),
        "proposals_same_fraction": float(jnp.mean(jnp.all(
            jnp.abs(jax.jit(rpn)(params, jax.jit(backbone)(params, images, hw), hw)["boxes"]
                    - boxes) < 1e-2, axis=-1)))}
  total_flops = result["gflop_per_image"]["total"] * 1e9
  seconds = result["seconds_per_image"]["total"]
  achieved = total_flops / seconds
  if jax.default_backend() == "cpu":  # Shared cores: CPU time spread over all cores.
    achieved = total_flops / (result["cpu_seconds_per_image"]["total"] / (os.cpu_count() or 1))
  result["achieved_gflops"] = round(achieved / 1e9, 1)
  if jax.default_backend() == "cpu":
    peak = (os.cpu_count() or 1) * 64 * args.cpu_ghz * 1e9
    efficiency = achieved / peak
    result["cpu_peak_gflops_assumed"] = peak / 1e9
    result["cpu_fraction_of_peak"] = round(efficiency, 3)
    result["h100_images_per_s_at_cpu_efficiency"] = round(
        efficiency * H100_BF16_FLOPS / total_flops, 1)
  result["h100_images_per_s_at_40pct_mfu"] = round(0.4 * H100_BF16_FLOPS / total_flops, 1)
  result["images_per_s_measured"] = round(1.0 / seconds, 2)
  print(json.dumps(result), flush=True)


if __name__ == "__main__":
  main()
