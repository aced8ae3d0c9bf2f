"""Image files -> BGR uint8 arrays for the detector, with a named error for every bad file.

Decoding is Pillow's. Colour handling follows OpenCV's ``cv2.imread(path, IMREAD_COLOR)``, which
the bottom-up-attention features were extracted with: the EXIF orientation is applied, alpha is
dropped, grayscale and palette images are replicated to three channels, CMYK is converted to
RGB, and 16-bit images keep their high byte (value >> 8). Files that cannot be decoded, are
empty, hold 32-bit integer or float pixels, have more than ``max_pixels`` pixels, or are so
elongated (one side over ``MAX_ASPECT`` times the other) that resizing for the detector would
leave the short side under 2 pixels raise `ImageError` naming the file and the reason;
`ImageError.kind` is one of `ERROR_KINDS`.
"""
from __future__ import annotations

import dataclasses
import os
import warnings
from typing import Optional

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Pillow's own decompression-bomb threshold (about 0.27 GB of RGB pixels).
DEFAULT_MAX_PIXELS = 89_478_485
# Image modes converted like cv2.imread(IMREAD_COLOR) does; what each one counts as.
_CONVERTED = {"1": "grayscale", "L": "grayscale", "LA": "grayscale", "La": "grayscale",
              "P": "palette", "PA": "palette", "RGBA": None, "RGBa": None, "RGBX": None,
              "RGB": None, "CMYK": "CMYK", "YCbCr": None}
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")
# Longest side over shortest side beyond which an image cannot be resized for the detector
# (longer side <= 1000: the shorter side would be under 2 pixels, or 0).
MAX_ASPECT = 500
ERROR_KINDS = ("unreadable", "empty", "undecodable", "huge", "unsupported_mode", "degenerate")


class ImageError(ValueError):
  """An image file that cannot become a detector input; the message names the file."""

  def __init__(self, path: str, kind: str, reason: str):
    super().__init__(f"{path}: {reason}")
    self.path, self.kind, self.reason = path, kind, reason


@dataclasses.dataclass(frozen=True)
class LoadedImage:
  """One decoded image.

  Attributes:
    bgr: [height, width, 3] uint8, channels blue, green, red.
    converted: what it was converted from ("grayscale", "palette", "CMYK", "16-bit"), or None.
  """
  bgr: np.ndarray
  converted: Optional[str] = None


def load_image(path: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> LoadedImage:
  """Reads `path` as a BGR uint8 image (module docstring: conversions and errors).

  Raises:
    ImageError: naming `path`, for a file that cannot be read or decoded, is empty, has more
      than `max_pixels` pixels, holds 32-bit integer / float pixels, or is thinner than
      1:`MAX_ASPECT`.
  """
  try:
    size = os.path.getsize(path)
  except OSError as e:
    raise ImageError(path, "unreadable", f"cannot read the file: {e.strerror or e}") from e
  if size == 0:
    raise ImageError(path, "empty", "empty file (0 bytes)")
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # max_pixels decides.
      with Image.open(path) as image:
        width, height = image.size
        if width * height > max_pixels:
          raise ImageError(path, "huge", f"{width}x{height} = {width * height:,} pixels, more "
                           f"than the limit of {max_pixels:,} (--max_pixels)")
        if max(width, height) > MAX_ASPECT * min(width, height):
          raise ImageError(path, "degenerate", f"{width}x{height} pixels: one side is more than "
                           f"{MAX_ASPECT} times the other, too thin to resize for the detector")
        image = ImageOps.exif_transpose(image)
        return _to_bgr(path, image)
  except Image.DecompressionBombError as e:
    raise ImageError(path, "huge", f"more pixels than Pillow decodes safely: {e}") from e
  except UnidentifiedImageError as e:
    raise ImageError(path, "undecodable", "not an image file Pillow can decode") from e
  except PermissionError as e:
    raise ImageError(path, "unreadable", f"cannot read the file: {e.strerror or e}") from e
  except (OSError, SyntaxError, ValueError, EOFError) as e:
    if isinstance(e, ImageError):
      raise
    raise ImageError(path, "undecodable", f"truncated or corrupt image data: {e}") from e


def _to_bgr(path: str, image: Image.Image) -> LoadedImage:
  """The decoded pixels of an open Pillow image as BGR uint8."""
  mode = image.mode
  if mode in _SIXTEEN_BIT:
    gray = (np.asarray(image).astype(np.uint16) >> 8).astype(np.uint8)
    return LoadedImage(np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2)), "16-bit")
  if mode not in _CONVERTED:
    raise ImageError(path, "unsupported_mode",
                     f"pixel mode {mode!r} (32-bit integer or float pixels, or an unusual "
                     "colour space) has no defined 8-bit colour conversion")
  rgb = np.asarray(image.convert("RGB"))
  return LoadedImage(np.ascontiguousarray(rgb[:, :, ::-1]), _CONVERTED[mode])
