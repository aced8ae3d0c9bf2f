"""Images -> the detector's input: resize, mean subtraction, and padding into size buckets.

The port's preprocessing (``processing_image.Preprocess``), done on the host in numpy:
* target size: scale the shorter side to ``min_size``; if the longer side then exceeds
  ``max_size``, scale both so it is ``max_size``; each side ``int(x + 0.5)``;
* bilinear resize of the float image, ``align_corners=False``, **no antialiasing**, with
  torch's arithmetic (scale ``in / out`` in float32, source coordinate ``(i + 0.5) * scale -
  0.5`` in double rounded to float32 and clamped at 0, weights in float32);
* subtract ``PIXEL_MEAN`` (B, G, R), divide by ``PIXEL_STD``.
``scale_yx = raw_hw / resized_hw`` (float32) maps boxes back to original pixels.

Buckets: one compiled function serves every image whose resized size fits a bucket. The
bucket of an image is its (h, w) rounded up to multiples of ``step`` pixels (128 by default);
the padding is zero (= the mean colour) and masked inside the network, so results do not
depend on the bucket. For ``bottom_up`` (600 / 1000) the usual buckets are 640 x {640, 768,
896, 1024} and their transposes; ``port`` (800 / 1333) 896 x {896, ..., 1408}.
"""

from __future__ import annotations

import numpy as np

from vilbert_jax.detection.config import DetectorConfig


def check_image(image: np.ndarray, where: str = "image") -> np.ndarray:
  """Accepts an H x W x 3 uint8 BGR array; raises ValueError naming `where` otherwise."""
  image = np.asarray(image)
  if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
    raise ValueError(f"{where}: expected an H x W x 3 uint8 BGR array, got "
                     f"{image.dtype} {image.shape}")
  if min(image.shape[:2]) < 1:
    raise ValueError(f"{where}: empty image {image.shape}")
  return image


def target_size(h: int, w: int, min_size: int, max_size: int) -> tuple[int, int]:
  """Resized (h, w): shorter side `min_size`, longer side at most `max_size`."""
  scale = min_size * 1.0 / min(h, w)
  if h < w:
    new_h, new_w = min_size, scale * w
  else:
    new_h, new_w = scale * h, min_size
  if max(new_h, new_w) > max_size:
    scale = max_size * 1.0 / max(new_h, new_w)
    new_h, new_w = new_h * scale, new_w * scale
  return int(new_h + 0.5), int(new_w + 0.5)


def _source_index(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Bilinear taps along one axis: (index0 [out], index1 [out], lambda1 float32 [out])."""
  scale = np.float32(np.float32(in_size) / np.float32(out_size))
  src = ((np.arange(out_size, dtype=np.float64) + 0.5) * np.float64(scale) - 0.5)
  src = np.maximum(src.astype(np.float32), np.float32(0))
  i0 = src.astype(np.int64)
  i1 = np.minimum(i0 + 1, in_size - 1)
  return i0, i1, (src - i0.astype(np.float32)).astype(np.float32)


def resize_bilinear(image: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
  """[h, w, C] float32 -> [out_h, out_w, C] float32 (torch bilinear, no antialias)."""
  y0, y1, ly = _source_index(image.shape[0], out_h)
  x0, x1, lx = _source_index(image.shape[1], out_w)
  one = np.float32(1)
  ly, lx = ly[:, None, None], lx[None, :, None]
  top = (one - lx) * image[y0][:, x0] + lx * image[y0][:, x1]
  bottom = (one - lx) * image[y1][:, x0] + lx * image[y1][:, x1]
  return ((one - ly) * top + ly * bottom).astype(np.float32)


def preprocess(image_bgr: np.ndarray, cfg: DetectorConfig, min_size: int, max_size: int
               ) -> tuple[np.ndarray, np.ndarray]:
  """uint8 [H, W, 3] BGR -> (input float32 [h, w, 3], scale_yx float32 [2] = raw / resized)."""
  image = check_image(image_bgr)
  h, w = target_size(image.shape[0], image.shape[1], min_size, max_size)
  x = resize_bilinear(image.astype(np.float32), h, w)
  x = (x - np.asarray(cfg.pixel_mean, np.float32)) / np.asarray(cfg.pixel_std, np.float32)
  scale = (np.asarray(image.shape[:2], np.float32) / np.asarray((h, w), np.float32))
  return x.astype(np.float32), scale.astype(np.float32)


def bucket(hw: tuple[int, int], step: int = 128) -> tuple[int, int]:
  """The padded (H, W) of an input of `hw` pixels: each side rounded up to a multiple of step."""
  return tuple(int(-(-v // step) * step) for v in hw)


def pad_batch(inputs: list[np.ndarray], shape: tuple[int, int], batch: int) -> np.ndarray:
  """Stacks [h, w, 3] inputs into a zero-padded [batch, H, W, 3] array."""
  out = np.zeros((batch, *shape, 3), np.float32)
  for i, x in enumerate(inputs):
    out[i, :x.shape[0], :x.shape[1]] = x
  return out
