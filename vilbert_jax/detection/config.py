"""DetectorConfig: the architecture and test-time settings of the bottom-up-attention detector.

Read from the checkpoint's ``config.yaml`` (the detectron2-style YAML of the PyTorch port:
``RESNETS``, ``RPN``, ``ROI_HEADS``, ...). Only the keys that inference uses are kept; keys that
only training reads are accepted and ignored, and a missing required key is an error naming it.
The RPN test settings, when absent, take the Caffe model's values (NMS 0.7, 6000 -> 300
proposals, weights 1) with a warning.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import warnings
from typing import Any, Mapping

import yaml

_BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class DetectorConfig:
  """ResNet C4 Faster R-CNN with a dilated res5 RoI head and class/attribute heads.

  Widths are channels; sizes are pixels of the resized image unless stated otherwise.
  """

  # --- backbone (ResNet stem + res2..res4, stride 16) ---
  depth: int = 101  # ResNet depth (50, 101, 152).
  stem_out_channels: int = 64  # Stem width.
  res2_out_channels: int = 256  # res2 output width (res3/res4/res5: x2, x4, x8).
  num_groups: int = 1  # Grouped 3x3 convolutions (1: plain ResNet).
  width_per_group: int = 64  # res2 bottleneck width per group (x2 per stage).
  stride_in_1x1: bool = True  # MSRA/Caffe: the stride sits in the first 1x1 conv.
  caffe_maxpool: bool = True  # Stem max-pool 3x3/2 without padding, ceil mode.
  res5_halve: bool = False  # False: res5 head with stride 1 and dilation 2 (the VG model).
  pixel_mean: tuple[float, float, float] = (102.9801, 115.9465, 122.7717)  # B, G, R.
  pixel_std: tuple[float, float, float] = (1.0, 1.0, 1.0)
  # --- RPN ---
  anchor_sizes: tuple[float, ...] = (64.0, 128.0, 256.0, 512.0)  # Anchor sides in pixels.
  anchor_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)  # Height / width.
  anchor_offset: float = 0.0  # Anchor centres at (offset + x) * stride.
  rpn_hidden_channels: int = 512  # RPN 3x3 conv width.
  rpn_nms_thresh: float = 0.7  # RPN NMS IoU threshold.
  pre_nms_topk: int = 6000  # Anchors kept by objectness before the RPN NMS.
  post_nms_topk: int = 300  # Proposals kept after it (the RoI head's batch).
  rpn_min_size: float = 0.0  # Proposals need width and height > this.
  rpn_box_weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
  # --- RoI head ---
  num_classes: int = 1600  # Foreground classes (the class head has one more: background).
  num_attrs: int = 400  # Attributes (the attribute head has one more, dropped).
  use_attr: bool = True  # Attribute branch present.
  cls_agnostic_bbox_reg: bool = False  # One box regression for all classes.
  box_weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0)
  pooler_resolution: int = 14  # RoIPool output side.
  # --- the port's own detection rule and input size ---
  nms_thresh_test: tuple[float, ...] = (0.5, 0.6, 0.7)  # Raised until MIN_DETECTIONS survive.
  min_detections: int = 36
  max_detections: int = 36
  min_size_test: int = 800  # Shorter side after resizing.
  max_size_test: int = 1333  # Cap on the longer side.
  # --- implementation choices (not in the YAML) ---
  dtype: str = "float32"  # Compute dtype of convolutions and matmuls ("bfloat16": see README).

  feature_stride: int = 16  # res4 stride (fixed by the architecture).

  def __post_init__(self):
    if self.depth not in _BLOCKS:
      raise ValueError(f"RESNETS.DEPTH={self.depth}: expected one of {sorted(_BLOCKS)}")
    if self.dtype not in DTYPES:
      raise ValueError(f"dtype={self.dtype!r}: expected one of {DTYPES}")
    if self.min_detections > self.max_detections:
      raise ValueError(f"MIN_DETECTIONS={self.min_detections} > MAX_DETECTIONS="
                       f"{self.max_detections}")

  @property
  def blocks_per_stage(self) -> tuple[int, int, int, int]:
    """Bottleneck blocks in res2, res3, res4 and res5."""
    return _BLOCKS[self.depth]

  @property
  def num_anchors(self) -> int:
    """Anchors per feature-map cell."""
    return len(self.anchor_sizes) * len(self.anchor_ratios)

  @property
  def res4_channels(self) -> int:
    return self.res2_out_channels * 4

  @property
  def res5_channels(self) -> int:
    """Width of the pooled region feature (2048 for the VG model)."""
    return self.res2_out_channels * 8

  def replace(self, **changes) -> "DetectorConfig":
    return dataclasses.replace(self, **changes)

  @classmethod
  def from_yaml(cls, path_or_text: str | os.PathLike, **overrides) -> "DetectorConfig":
    """Reads the checkpoint's ``config.yaml`` (a path, or the YAML text itself)."""
    text = str(path_or_text)
    where = "config YAML text"
    if isinstance(path_or_text, os.PathLike) or ("\n" not in text and text.endswith(
        (".yaml", ".yml"))):
      path = pathlib.Path(path_or_text)
      if not path.exists():
        raise FileNotFoundError(f"detector config not found: {path}")
      text, where = path.read_text(), str(path)
    tree = yaml.safe_load(text)
    if not isinstance(tree, Mapping):
      raise ValueError(f"{where}: expected a YAML mapping, got {type(tree).__name__}")
    return cls.from_mapping(tree, where=where, **overrides)

  @classmethod
  def from_mapping(cls, tree: Mapping[str, Any], where: str = "config",
                   **overrides) -> "DetectorConfig":
    """Builds the config from the parsed YAML tree (``{"RESNETS": {...}, ...}``)."""

    def get(path: str, default: Any = dataclasses.MISSING) -> Any:
      node: Any = tree
      for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
          if default is dataclasses.MISSING:
            raise KeyError(f"{where}: missing key {path}")
          return default
        node = node[part]
      return node

    def rpn(key: str, caffe_value: Any) -> Any:
      """RPN test settings; absent ones take the Caffe model's test values, with a warning."""
      value = get(f"RPN.{key}", None)
      if value is None:
        warnings.warn(f"{where}: RPN.{key} missing; using the Caffe test value {caffe_value}")
        return caffe_value
      return value

    def level(path: str) -> tuple[float, ...]:
      value = get(path)
      if len(value) != 1:
        raise ValueError(f"{where}: {path}={value}: this detector has one feature level")
      return tuple(float(v) for v in value[0])

    nms_test = get("ROI_HEADS.NMS_THRESH_TEST")
    fields = dict(
        depth=int(get("RESNETS.DEPTH")),
        stem_out_channels=int(get("RESNETS.STEM_OUT_CHANNELS")),
        res2_out_channels=int(get("RESNETS.RES2_OUT_CHANNELS")),
        num_groups=int(get("RESNETS.NUM_GROUPS", 1)),
        width_per_group=int(get("RESNETS.WIDTH_PER_GROUP")),
        stride_in_1x1=bool(get("RESNETS.STRIDE_IN_1X1", True)),
        caffe_maxpool=bool(get("MODEL.MAX_POOL", True)),
        res5_halve=bool(get("ROI_BOX_HEAD.RES5HALVE", False)),
        pixel_mean=tuple(float(v) for v in get("MODEL.PIXEL_MEAN")),
        pixel_std=tuple(float(v) for v in get("MODEL.PIXEL_STD", [1.0, 1.0, 1.0])),
        anchor_sizes=level("ANCHOR_GENERATOR.SIZES"),
        anchor_ratios=level("ANCHOR_GENERATOR.ASPECT_RATIOS"),
        anchor_offset=float(get("ANCHOR_GENERATOR.OFFSET", 0.0)),
        rpn_hidden_channels=int(get("PROPOSAL_GENERATOR.HIDDEN_CHANNELS")),
        rpn_nms_thresh=float(rpn("NMS_THRESH", 0.7)),
        pre_nms_topk=int(rpn("PRE_NMS_TOPK_TEST", 6000)),
        post_nms_topk=int(rpn("POST_NMS_TOPK_TEST", 300)),
        rpn_min_size=float(get("PROPOSAL_GENERATOR.MIN_SIZE", 0.0)),
        rpn_box_weights=tuple(float(v) for v in rpn("BBOX_REG_WEIGHTS", [1.0, 1.0, 1.0, 1.0])),
        num_classes=int(get("ROI_HEADS.NUM_CLASSES")),
        num_attrs=int(get("ROI_BOX_HEAD.NUM_ATTRS")),
        use_attr=bool(get("ROI_BOX_HEAD.ATTR", True)),
        cls_agnostic_bbox_reg=bool(get("ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG", False)),
        box_weights=tuple(float(v) for v in get("ROI_BOX_HEAD.BBOX_REG_WEIGHTS")),
        pooler_resolution=int(get("ROI_BOX_HEAD.POOLER_RESOLUTION")),
        nms_thresh_test=tuple(float(v) for v in (
            nms_test if isinstance(nms_test, (list, tuple)) else [nms_test])),
        min_detections=int(get("MIN_DETECTIONS")),
        max_detections=int(get("MAX_DETECTIONS")),
        min_size_test=int(get("INPUT.MIN_SIZE_TEST")),
        max_size_test=int(get("INPUT.MAX_SIZE_TEST")),
    )
    if get("RESNETS.NORM", "BN") not in ("BN", "FrozenBN"):
      raise ValueError(f"{where}: RESNETS.NORM={get('RESNETS.NORM')}: only (frozen) BatchNorm")
    if get("INPUT.FORMAT", "BGR") != "BGR":
      raise ValueError(f"{where}: INPUT.FORMAT={get('INPUT.FORMAT')}: expected BGR")
    fields.update(overrides)
    return cls(**fields)
