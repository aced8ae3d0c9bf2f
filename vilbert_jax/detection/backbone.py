"""ResNet C4 trunk (stem, res2, res3, res4; stride 16) with the Caffe conventions.

Stem: 7x7/2 conv (padding 3) + frozen BN + ReLU, then a 3x3/2 max-pool **without padding in
ceil mode** (``MODEL.MAX_POOL: true``; the last window may hang over the edge). res2 has stride
1, res3 and res4 stride 2, with the stride in the first 1x1 conv.

``valid_sizes`` gives, for an image of (h, w) pixels, the valid extent of every map, so a
padded batch (see ``preprocess``) is masked to behave like each image run alone.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from vilbert_jax.detection.config import DetectorConfig
from vilbert_jax.detection.layers import Bottleneck, ConvAffine, apply_mask


def _conv_out(size, stride: int):
  """Output size of a stride-`stride` conv that pads by (kernel - 1) / 2 (ceil(size/stride))."""
  return (size - 1) // stride + 1


def _pool_out(size):
  """Output size of the 3x3/2 max-pool, no padding, ceil mode (size >= 3)."""
  return (size - 2) // 2 + 1


def valid_sizes(hw, cfg: DetectorConfig):
  """Valid (h, w) of the stem output, res2 (= pool), res3 and res4 maps for image size `hw`.

  Works on ints, numpy and jax integer arrays ([..., 2]).
  """
  stem = _conv_out(hw, 2)
  pool = _pool_out(stem) if cfg.caffe_maxpool else _conv_out(stem, 2)
  res3 = _conv_out(pool, 2)
  return stem, pool, res3, _conv_out(res3, 2)


def spatial_mask(valid_hw: jax.Array, height: int, width: int) -> jax.Array:
  """[batch, height, width, 1] float32: 1 where y < valid_h and x < valid_w."""
  ys = jnp.arange(height)[None, :, None] < valid_hw[:, 0, None, None]
  xs = jnp.arange(width)[None, None, :] < valid_hw[:, 1, None, None]
  return (ys & xs)[..., None].astype(jnp.float32)


def max_pool_caffe(x: jax.Array) -> jax.Array:
  """3x3/2 max-pool with no padding and ceil mode ([b, H, W, C], values >= 0 after ReLU)."""
  pads = []
  for size in x.shape[1:3]:
    out = -(-(size - 3) // 2) + 1
    pads.append((0, max(0, 2 * (out - 1) + 3 - size)))
  return lax.reduce_window(x, jnp.array(-jnp.inf, x.dtype), lax.max, (1, 3, 3, 1), (1, 2, 2, 1),
                           [(0, 0), *pads, (0, 0)])


class ResNetC4(nn.Module):
  """Image [batch, H, W, 3] (mean-subtracted BGR, zero padding) -> res4 [batch, H/16, W/16, C4].

  ``image_hw`` [batch, 2] int32: each image's valid (h, w) inside the padded batch.
  """

  cfg: DetectorConfig

  @nn.compact
  def __call__(self, images: jax.Array, image_hw: jax.Array) -> jax.Array:
    cfg = self.cfg
    stem_hw, pool_hw, *stage_hw = valid_sizes(image_hw, cfg)
    x = nn.relu(ConvAffine(cfg.stem_out_channels, 7, stride=2, padding=3, dtype=cfg.dtype,
                           name="stem")(images))
    x = apply_mask(x, spatial_mask(stem_hw, *x.shape[1:3]))
    if cfg.caffe_maxpool:
      x = max_pool_caffe(x)
    else:
      x = lax.reduce_window(x, jnp.array(-jnp.inf, x.dtype), lax.max, (1, 3, 3, 1),
                            (1, 2, 2, 1), [(0, 0), (1, 1), (1, 1), (0, 0)])
    mask = spatial_mask(pool_hw, *x.shape[1:3])
    x = apply_mask(x, mask)
    out_channels = cfg.res2_out_channels
    bottleneck = cfg.num_groups * cfg.width_per_group
    for stage, (blocks, hw) in enumerate(zip(cfg.blocks_per_stage[:3], [pool_hw, *stage_hw])):
      for i in range(blocks):
        stride = 2 if (stage > 0 and i == 0) else 1
        out_hw = (x.shape[1] - 1) // stride + 1, (x.shape[2] - 1) // stride + 1
        mask_out = mask if stride == 1 else spatial_mask(hw, *out_hw)
        x = Bottleneck(out_channels, bottleneck, stride=stride,
                       stride_in_1x1=cfg.stride_in_1x1, groups=cfg.num_groups, dtype=cfg.dtype,
                       name=f"res{stage + 2}_{i}")(x, mask, mask_out)
        mask = mask_out
      out_channels *= 2
      bottleneck *= 2
    return x

