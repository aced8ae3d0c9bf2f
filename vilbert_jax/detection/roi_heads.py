"""The RoI head: res5 on 14x14 RoIPool crops, mean-pooled, then class, box and attribute heads.

res5 as in the VG model (``RES5HALVE: false``): three bottlenecks, the first with stride 1
(instead of 2) and every 3x3 conv dilated by 2 (padding 2), so the 14x14 crop stays 14x14;
the mean over it is the region feature (2048 wide for the full model).

Heads (``FastRCNNOutputLayers`` of the port): class logits [R, K + 1] (background **last**),
box deltas [R, 4K], and attributes: the arg-max over all K + 1 class logits is embedded,
concatenated to the feature, ``fc_attr`` + ReLU, ``attr_score`` -> [R, num_attrs + 1].
"""

from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from vilbert_jax.detection.config import DetectorConfig
from vilbert_jax.detection.layers import Bottleneck, precision


class Res5Head(nn.Module):
  """[R, P, P, C4] RoI crops -> [R, C5] mean-pooled float32 region features."""

  cfg: DetectorConfig

  @nn.compact
  def __call__(self, crops: jax.Array) -> jax.Array:
    cfg = self.cfg
    stride, dilation = (2, 1) if cfg.res5_halve else (1, 2)
    x = crops
    for i in range(cfg.blocks_per_stage[3]):
      x = Bottleneck(cfg.res5_channels, cfg.num_groups * cfg.width_per_group * 8,
                     stride=stride if i == 0 else 1, dilation=dilation,
                     stride_in_1x1=cfg.stride_in_1x1, groups=cfg.num_groups, dtype=cfg.dtype,
                     name=f"res5_{i}")(x)
    return jnp.mean(x.astype(jnp.float32), axis=(1, 2))


class BoxPredictor(nn.Module):
  """[R, C5] features -> (class logits [R, K+1], attribute logits [R, A+1] or None,
  box deltas [R, 4K]); always float32 (under 1% of the FLOPs; in bfloat16 they would move
  class probabilities by several hundredths)."""

  cfg: DetectorConfig

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, Optional[jax.Array], jax.Array]:
    cfg = self.cfg

    def dense(features, name):
      return nn.Dense(features, dtype=jnp.float32, precision=precision("float32"), name=name)

    k = cfg.num_classes
    x = x.astype(jnp.float32)
    cls_logits = dense(k + 1, "cls_score")(x)
    deltas = dense(4 * (1 if cfg.cls_agnostic_bbox_reg else k), "bbox_pred")(x)
    if not cfg.use_attr:
      return cls_logits, None, deltas
    width = cfg.res5_channels
    emb = nn.Embed(k + 1, width // 8, name="cls_embedding")(jnp.argmax(cls_logits, axis=-1))
    h = nn.relu(dense(width // 4, "fc_attr")(jnp.concatenate([x, emb], -1)))
    attr_logits = dense(cfg.num_attrs + 1, "attr_score")(h)
    return cls_logits, attr_logits, deltas
