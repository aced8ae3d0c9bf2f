"""Convolution + frozen BatchNorm (as an affine) and the ResNet bottleneck block, NHWC.

Caffe/detectron2 conventions of the bottom-up-attention ResNet: no conv biases in the trunk,
every conv followed by a frozen BatchNorm that the converter folds to ``y * scale + bias``,
the stride in the first 1x1 conv (``stride_in_1x1``), a 1x1 projection shortcut when the
width changes.

Images of different sizes share one compiled function by being padded to a bucket (see
``preprocess``). ``mask`` ([batch, H, W, 1], 1 inside the image, 0 in the padding) is applied
after every activation that feeds a spatial (3x3, 7x7, pooling) window, so the padding is zero
exactly where the unpadded network sees its own zero padding: the valid part of every map is
the same as when the image is run alone.
"""

from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

_INIT = nn.initializers.he_normal()


def precision(dtype: str) -> Optional[lax.Precision]:
  """float32 convolutions in full precision (no TF32 passes on GPU); bfloat16 as is."""
  return lax.Precision.HIGHEST if dtype == "float32" else None


class ConvAffine(nn.Module):
  """``conv(x) * scale + bias`` (``affine``: frozen BatchNorm) or ``conv(x) + bias``.

  Input [batch, H, W, Cin] in any float dtype; output [batch, H', W', features] in ``dtype``,
  accumulated in float32.
  """

  features: int  # Output channels.
  kernel_size: int = 1  # Square kernel side.
  stride: int = 1
  dilation: int = 1
  padding: int = 0  # Symmetric zero padding.
  affine: bool = True  # Frozen BatchNorm folded to scale/bias (no conv bias).
  use_bias: bool = False  # Plain conv bias (RPN head); exclusive with `affine`.
  groups: int = 1  # Grouped convolution.
  dtype: str = "float32"  # Compute dtype.

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k = self.kernel_size
    kernel = self.param("kernel", _INIT, (k, k, x.shape[-1] // self.groups, self.features))
    dtype = jnp.dtype(self.dtype)
    y = lax.conv_general_dilated(
        x.astype(dtype), kernel.astype(dtype), (self.stride, self.stride),
        [(self.padding, self.padding)] * 2, rhs_dilation=(self.dilation, self.dilation),
        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=self.groups,
        precision=precision(self.dtype), preferred_element_type=jnp.float32)
    if self.affine:
      y = (y * self.param("scale", nn.initializers.ones, (self.features,))
           + self.param("bias", nn.initializers.zeros, (self.features,)))
    elif self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (self.features,))
    return y.astype(dtype)


def apply_mask(x: jax.Array, mask: Optional[jax.Array]) -> jax.Array:
  return x if mask is None else x * mask.astype(x.dtype)


class Bottleneck(nn.Module):
  """ResNet bottleneck: 1x1 -> 3x3 -> 1x1 (+ shortcut), ReLU after each and after the sum.

  ``x`` [batch, H, W, Cin] (zero in the padding) -> [batch, H', W', out_channels];
  ``mask_in``/``mask_out`` are the validity masks at the input and output resolutions
  (None: every position valid, as in the RoI head).
  """

  out_channels: int
  bottleneck_channels: int
  stride: int = 1
  dilation: int = 1
  stride_in_1x1: bool = True
  groups: int = 1
  dtype: str = "float32"

  @nn.compact
  def __call__(self, x: jax.Array, mask_in: Optional[jax.Array] = None,
               mask_out: Optional[jax.Array] = None) -> jax.Array:
    s1, s3 = (self.stride, 1) if self.stride_in_1x1 else (1, self.stride)
    y = nn.relu(ConvAffine(self.bottleneck_channels, 1, stride=s1, dtype=self.dtype,
                           name="conv1")(x))
    y = apply_mask(y, mask_out if s3 == 1 else mask_in)
    y = nn.relu(ConvAffine(self.bottleneck_channels, 3, stride=s3, dilation=self.dilation,
                           padding=self.dilation, groups=self.groups, dtype=self.dtype,
                           name="conv2")(y))
    y = ConvAffine(self.out_channels, 1, dtype=self.dtype, name="conv3")(y)
    if x.shape[-1] != self.out_channels:
      x = ConvAffine(self.out_channels, 1, stride=self.stride, dtype=self.dtype,
                     name="shortcut")(x)
    return apply_mask(nn.relu(y + x), mask_out)
