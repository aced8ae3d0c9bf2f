"""From BGR images to region features: ``extract`` and ``region_outputs``.

``extract`` preprocesses each image on the host (``preprocess``), groups images by size
bucket, and runs one jitted function per (bucket, batch size): backbone, RPN, box head and
the protocol's selection (``selection``), all with fixed shapes; only the final slicing to
each image's box count happens on the host. Compiled functions are cached per
(config, protocol, bucket, batch).
"""

from __future__ import annotations

import functools
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vilbert_jax.data.features.record import RegionFeatures
from vilbert_jax.detection.config import DetectorConfig
from vilbert_jax.detection.model import FasterRCNN
from vilbert_jax.detection.preprocess import bucket, check_image, pad_batch, preprocess
from vilbert_jax.detection.selection import (Protocol, bottom_up_keep, bottom_up_max_conf,
                                             get_protocol, port_keep)


def background_first(probs: jax.Array) -> jax.Array:
  """[..., K+1] with background last (the port) -> background first (the feature stores)."""
  return jnp.concatenate([probs[..., -1:], probs[..., :-1]], axis=-1)


def to_raw_pixels(boxes: jax.Array, scale_yx: jax.Array) -> jax.Array:
  """Resized-image boxes [..., 4] -> original pixels (x * scale_x, y * scale_y, float32)."""
  s = jnp.stack([scale_yx[..., 1], scale_yx[..., 0]] * 2, axis=-1)
  return boxes * s[..., None, :]


def detect(params: Any, images: jax.Array, image_hw: jax.Array, scale_yx: jax.Array,
           cfg: DetectorConfig, protocol: Protocol) -> dict[str, jax.Array]:
  """The whole detector on a padded batch; every output has a fixed shape.

  Args:
    images: [B, H, W, 3] preprocessed, zero-padded; image_hw: [B, 2] int32 resized sizes;
    scale_yx: [B, 2] float32 original / resized.

  Returns:
    {"mask": [B, S] bool real slots, "keep": [B, S] proposal indices, "boxes": [B, S, 4]
     original pixels, "features": [B, S, C5], "cls_prob": [B, S, K+1] background first},
    S = ``protocol.max_boxes``.
  """
  out = FasterRCNN(cfg).apply({"params": params}, images, image_hw)
  probs = jax.nn.softmax(out["cls_logits"], axis=-1)
  bgfirst = background_first(probs)
  valid = out["valid"]
  if protocol.name == "bottom_up":
    raw = to_raw_pixels(out["boxes"], scale_yx)
    max_conf = jax.vmap(lambda b, p, v: bottom_up_max_conf(b, p, v, protocol.nms_thresh))(
        raw, bgfirst, valid)
    keep, mask = jax.vmap(lambda m, v: bottom_up_keep(m, v, protocol))(max_conf, valid)
    boxes = jnp.take_along_axis(raw, keep[..., None], axis=1)
  else:
    sel = jax.vmap(lambda p, d, c, v, hw: port_keep(p, d, c, v, hw, cfg))(
        out["boxes"], out["box_deltas"], probs, valid, image_hw)
    keep, mask = sel["keep"], sel["mask"]
    boxes = to_raw_pixels(sel["boxes"], scale_yx)
  take = lambda x: jnp.take_along_axis(x, keep[..., None], axis=1)  # noqa: E731
  return {"mask": mask, "keep": keep, "boxes": boxes, "features": take(out["pooled"]),
          "cls_prob": take(bgfirst)}


@functools.lru_cache(maxsize=None)
def _compiled_detect(cfg: DetectorConfig, protocol: Protocol):
  return jax.jit(functools.partial(detect, cfg=cfg, protocol=protocol))


def _batch_size(n: int, limit: int) -> int:
  """Images per call: a power of two up to `limit`, so few shapes get compiled."""
  size = 1
  while size < min(n, limit):
    size *= 2
  return min(size, limit)


def extract(params: Any, cfg: DetectorConfig, images_bgr_uint8: Sequence[np.ndarray],
            protocol: str | Protocol = "bottom_up", image_ids: Optional[Sequence[str]] = None,
            batch_size: int = 8, bucket_step: int = 128) -> list[RegionFeatures]:
  """Region features of each image.

  Args:
    params: ``FasterRCNN`` params (``vj.convert.frcnn_to_flax`` or ``load_detector``).
    cfg: the detector's config.
    images_bgr_uint8: H x W x 3 uint8 arrays in B, G, R order (OpenCV's order).
    protocol: "bottom_up" (default), "port" or a ``selection.Protocol``.
    image_ids: ids of the records (default "0", "1", ...).
    batch_size: images per device call (same size bucket).
    bucket_step: bucket granularity in pixels (``preprocess.bucket``).

  Returns:
    One ``RegionFeatures`` per image, in input order: features [n, C5], boxes [n, 4] in
    original pixels, image_w/h of the original, cls_prob [n, K+1] background first.
  """
  proto = get_protocol(protocol, cfg)
  ids = [str(i) for i in range(len(images_bgr_uint8))] if image_ids is None else list(image_ids)
  if len(ids) != len(images_bgr_uint8):
    raise ValueError(f"{len(ids)} image ids for {len(images_bgr_uint8)} images")
  prepared = []
  for i, image in enumerate(images_bgr_uint8):
    check_image(image, f"image {ids[i]}")
    x, scale = preprocess(image, cfg, proto.min_size, proto.max_size)
    prepared.append((x, scale, image.shape[:2]))
  groups: dict[tuple[int, int], list[int]] = {}
  for i, (x, _, _) in enumerate(prepared):
    groups.setdefault(bucket(x.shape[:2], bucket_step), []).append(i)
  fn = _compiled_detect(cfg, proto)
  results: list[Optional[RegionFeatures]] = [None] * len(prepared)
  for shape, members in groups.items():
    size = _batch_size(len(members), batch_size)
    for start in range(0, len(members), size):
      chunk = members[start:start + size]
      images = pad_batch([prepared[i][0] for i in chunk], shape, size)
      hw = np.asarray([prepared[i][0].shape[:2] for i in chunk]
                      + [shape] * (size - len(chunk)), np.int32)
      scale = np.asarray([prepared[i][1] for i in chunk] + [(1.0, 1.0)] * (size - len(chunk)),
                         np.float32)
      out = jax.device_get(fn(params, images, hw, scale))
      for j, i in enumerate(chunk):
        n = int(out["mask"][j].sum())
        raw_h, raw_w = prepared[i][2]
        results[i] = RegionFeatures(
            ids[i], np.asarray(out["features"][j, :n], np.float32),
            np.asarray(out["boxes"][j, :n], np.float32), int(raw_w), int(raw_h),
            np.asarray(out["cls_prob"][j, :n], np.float32))
  return results


@functools.lru_cache(maxsize=None)
def _compiled_region_outputs(cfg: DetectorConfig):
  model = FasterRCNN(cfg)

  def fn(params, images, image_hw, rois):
    res4 = model.apply({"params": params}, images, image_hw, method="features")
    return model.apply({"params": params}, res4, rois, False, method="box_head")

  return jax.jit(fn)


def region_outputs(params: Any, cfg: DetectorConfig, image_bgr_uint8: np.ndarray,
                   boxes: np.ndarray, protocol: str | Protocol = "bottom_up",
                   bucket_step: int = 128) -> tuple[np.ndarray, ...]:
  """The box head's outputs for given boxes (teacher forcing).

  Args:
    image_bgr_uint8: H x W x 3 uint8 BGR image.
    boxes: [N, 4] (x1, y1, x2, y2) in original pixels.
    protocol: chooses the input size ("bottom_up": 600 / 1000, "port": the config's).

  Returns:
    (pooled [N, C5], class_logits [N, K+1] background last, attribute_logits [N, A+1]
     (None without an attribute head), box_deltas [N, 4K]) as numpy float32.
  """
  proto = get_protocol(protocol, cfg)
  boxes = np.asarray(boxes, np.float32)
  if boxes.ndim != 2 or boxes.shape[1] != 4 or not np.all(np.isfinite(boxes)):
    raise ValueError(f"boxes: expected finite [N, 4] (x1, y1, x2, y2), got {boxes.shape}")
  x, scale = preprocess(image_bgr_uint8, cfg, proto.min_size, proto.max_size)
  n = boxes.shape[0]
  slots = max(16, -(-n // 16) * 16)
  rois = np.zeros((1, slots, 4), np.float32)
  rois[0, :n] = boxes / np.asarray([scale[1], scale[0], scale[1], scale[0]], np.float32)
  shape = bucket(x.shape[:2], bucket_step)
  out = _compiled_region_outputs(cfg)(params, pad_batch([x], shape, 1),
                                      np.asarray([x.shape[:2]], np.int32), rois)
  return tuple(None if o is None else np.asarray(o[0, :n], np.float32) for o in out)
