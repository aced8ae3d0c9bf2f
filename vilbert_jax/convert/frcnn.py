"""PyTorch bottom-up-attention Faster R-CNN (the LXMERT/VisualBERT port) -> Flax params.

Key layout of the port's ``pytorch_model.bin`` (``frcnn-vg-finetuned``)::

    backbone.stem.conv1.weight (+ .norm.{weight,bias,running_mean,running_var})
    backbone.res{2,3,4}.{i}.{conv1,conv2,conv3,shortcut}.weight (+ .norm.*)
    proposal_generator.anchor_generator.cell_anchors.0
    proposal_generator.rpn_head.{conv,objectness_logits,anchor_deltas}.{weight,bias}
    roi_heads.res5.{i}.{conv1,conv2,conv3,shortcut}.weight (+ .norm.*)
    roi_heads.box_predictor.{cls_score,bbox_pred,fc_attr,attr_score}.{weight,bias},
    roi_heads.box_predictor.cls_embedding.weight

Conv weights OIHW -> HWIO; Linear [out, in] -> [in, out]; each frozen BatchNorm (eval mode,
eps 1e-5) folded to ``scale = weight / sqrt(running_var + eps)``,
``bias = bias - running_mean * scale`` in float32 (the port's arithmetic). Every key must be
consumed (``num_batches_tracked`` counters are accepted and unused) and every shape must
match the config; errors name the keys.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping

import flax
import jax
import jax.numpy as jnp
import numpy as np

from vilbert_jax.detection.config import DetectorConfig
from vilbert_jax.detection.model import FasterRCNN

BN_EPS = 1e-5
_BN = ("weight", "bias", "running_mean", "running_var")


class ConversionError(ValueError):
  """The state dict does not fit the config; the message names the keys."""


@functools.lru_cache(maxsize=None)
def param_shapes(cfg: DetectorConfig) -> dict[tuple[str, ...], tuple[int, ...]]:
  """Flattened Flax param paths -> shapes of ``FasterRCNN(cfg)`` (no computation)."""
  model = FasterRCNN(cfg)
  images = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
  hw = jax.ShapeDtypeStruct((1, 2), jnp.int32)
  shapes = jax.eval_shape(lambda i, h: model.init(jax.random.key(0), i, h), images, hw)
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(shapes["params"]))
  return {k: tuple(v.shape) for k, v in flat.items()}


def _torch_name(path: tuple[str, ...]) -> tuple[str, str]:
  """Flax path (module path + leaf) -> (torch module prefix, kind of leaf)."""
  *mods, leaf = path
  top = mods[0]
  if top == "backbone":
    block = mods[1]
    if block == "stem":
      prefix = "backbone.stem.conv1"
    else:  # res{s}_{i}/conv
      stage, index = block.split("_")
      prefix = f"backbone.{stage}.{index}.{mods[2]}"
  elif top == "rpn":
    if leaf == "cell_anchors":
      return "proposal_generator.anchor_generator.cell_anchors.0", "tensor"
    prefix = f"proposal_generator.rpn_head.{mods[1]}"
  elif top == "res5":
    index = mods[1].split("_")[1]
    prefix = f"roi_heads.res5.{index}.{mods[2]}"
  elif top == "box_predictor":
    prefix = f"roi_heads.box_predictor.{mods[1]}"
  else:
    raise AssertionError(path)
  return prefix, leaf


def frcnn_to_flax(state_dict: Mapping[str, np.ndarray], cfg: DetectorConfig) -> dict[str, Any]:
  """Converts the port's state dict to ``FasterRCNN(cfg)`` params (nested dict of numpy).

  Raises:
    ConversionError: missing keys, unused keys or wrong shapes (all listed by name).
  """
  state = {k: np.asarray(v) for k, v in state_dict.items()}
  used: set[str] = set()
  missing: list[str] = []
  wrong: list[str] = []
  flat: dict[tuple[str, ...], np.ndarray] = {}

  def take(key: str) -> np.ndarray | None:
    if key not in state:
      missing.append(key)
      return None
    used.add(key)
    return state[key].astype(np.float32)

  for path, shape in param_shapes(cfg).items():
    prefix, leaf = _torch_name(path)
    norm = prefix.startswith(("backbone.", "roi_heads.res5."))
    if leaf == "tensor":
      value = take(prefix)
      key = prefix
    elif leaf == "kernel" and path[0] == "box_predictor":
      value, key = take(f"{prefix}.weight"), f"{prefix}.weight"
      value = None if value is None else value.T
    elif leaf == "kernel":
      value, key = take(f"{prefix}.weight"), f"{prefix}.weight"
      value = None if value is None else value.transpose(2, 3, 1, 0)
    elif leaf == "embedding":
      value, key = take(f"{prefix}.weight"), f"{prefix}.weight"
    elif norm and leaf in ("scale", "bias"):
      bn = [take(f"{prefix}.norm.{n}") for n in _BN]
      key = f"{prefix}.norm.*"
      if any(v is None for v in bn):
        continue
      weight, bias, mean, var = bn
      if not all(v.shape == (shape[0],) for v in bn):
        wrong.append(f"{key}: shapes {[v.shape for v in bn]}, expected ({shape[0]},)")
        continue
      scale = (weight / np.sqrt(var + np.float32(BN_EPS))).astype(np.float32)
      value = scale if leaf == "scale" else (bias - mean * scale).astype(np.float32)
    else:  # plain bias
      value, key = take(f"{prefix}.{leaf}"), f"{prefix}.{leaf}"
    if value is None:
      continue
    if value.shape != shape:
      wrong.append(f"{key}: shape {value.shape} does not fit {'/'.join(path)} {shape}")
      continue
    flat[path] = value
  unused = sorted(k for k in state if k not in used and not k.endswith("num_batches_tracked"))
  problems = []
  if missing:
    problems.append(f"{len(missing)} missing keys: {', '.join(sorted(set(missing)))}")
  if wrong:
    problems.append(f"{len(wrong)} wrong shapes: {'; '.join(wrong)}")
  if unused:
    problems.append(f"{len(unused)} unused keys: {', '.join(unused)}")
  if problems:
    raise ConversionError("frcnn checkpoint does not fit the detector config: "
                          + " | ".join(problems))
  return flax.traverse_util.unflatten_dict(flat)


def state_dict_shapes(cfg: DetectorConfig) -> dict[str, tuple[int, ...]]:
  """The port's state-dict keys and shapes for `cfg` (``num_batches_tracked`` excluded)."""
  out: dict[str, tuple[int, ...]] = {}
  for path, shape in param_shapes(cfg).items():
    prefix, leaf = _torch_name(path)
    if leaf == "tensor":
      out[prefix] = shape
    elif leaf == "kernel" and path[0] == "box_predictor":
      out[f"{prefix}.weight"] = shape[::-1]
    elif leaf == "kernel":
      out[f"{prefix}.weight"] = (shape[3], shape[2], shape[0], shape[1])
    elif leaf == "embedding":
      out[f"{prefix}.weight"] = shape
    elif prefix.startswith(("backbone.", "roi_heads.res5.")) and leaf in ("scale", "bias"):
      out.update({f"{prefix}.norm.{n}": shape for n in _BN})
    else:
      out[f"{prefix}.{leaf}"] = shape
  return out
