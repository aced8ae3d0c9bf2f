"""Region proposal network: the head, anchors, and static-shape proposal selection.

Proposals per image, as in the port: decode every anchor with its deltas (weights 1,1,1,1),
take the top ``pre_nms_topk`` by objectness logit (descending; ties lower index first), clip
to the image, drop empty boxes (width or height <= ``rpn_min_size``), greedy NMS at
``rpn_nms_thresh`` (no "+1"), keep the first ``post_nms_topk``. Here the count is fixed: a
padded batch of ``post_nms_topk`` boxes with a validity mask (small images can have fewer).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vilbert_jax.detection.boxes import apply_deltas, clip
from vilbert_jax.detection.config import DetectorConfig
from vilbert_jax.detection.layers import ConvAffine
from vilbert_jax.detection.nms import nms_sorted


def cell_anchors(cfg: DetectorConfig) -> np.ndarray:
  """[A, 4] anchors centred on (0, 0), size-major (a = 3 * size_index + ratio_index)."""
  out = []
  for size in cfg.anchor_sizes:
    for ratio in cfg.anchor_ratios:
      w = np.sqrt(size ** 2.0 / ratio)
      h = ratio * w
      out.append([-w / 2.0, -h / 2.0, w / 2.0, h / 2.0])
  return np.asarray(out, np.float32)


def grid_anchors(cells: jax.Array, height: int, width: int, stride: int,
                 offset: float) -> jax.Array:
  """[A, 4] cell anchors -> [height * width * A, 4], index (y * width + x) * A + a."""
  sx = jnp.arange(width, dtype=jnp.float32) * stride + offset * stride
  sy = jnp.arange(height, dtype=jnp.float32) * stride + offset * stride
  shift_y, shift_x = jnp.meshgrid(sy, sx, indexing="ij")
  shifts = jnp.stack([shift_x, shift_y, shift_x, shift_y], axis=-1).reshape(-1, 1, 4)
  return (shifts + cells[None].astype(jnp.float32)).reshape(-1, 4)


class RPNHead(nn.Module):
  """res4 [batch, H, W, C4] -> (objectness logits [batch, H, W, A],
  deltas [batch, H, W, A, 4], the checkpoint's cell anchors [A, 4])."""

  cfg: DetectorConfig

  @nn.compact
  def __call__(self, res4: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    cfg = self.cfg
    a = cfg.num_anchors
    t = nn.relu(ConvAffine(cfg.rpn_hidden_channels, 3, padding=1, affine=False, use_bias=True,
                           dtype=cfg.dtype, name="conv")(res4))
    logits = ConvAffine(a, 1, affine=False, use_bias=True, dtype="float32",
                        name="objectness_logits")(t)
    deltas = ConvAffine(4 * a, 1, affine=False, use_bias=True, dtype="float32",
                        name="anchor_deltas")(t)
    cells = self.param("cell_anchors", lambda _: jnp.asarray(cell_anchors(cfg)))
    return logits, deltas.reshape(*deltas.shape[:-1], a, 4), cells


def propose(logits: jax.Array, deltas: jax.Array, cells: jax.Array, feature_hw: jax.Array,
            image_hw: jax.Array, cfg: DetectorConfig) -> dict[str, jax.Array]:
  """Proposals of one image from its RPN outputs.

  Args:
    logits: [H, W, A]; deltas: [H, W, A, 4] (H, W: the padded map).
    cells: [A, 4] cell anchors.
    feature_hw: [2] int, valid extent of the map; image_hw: [2] int, resized image size.

  Returns:
    {"boxes": [P, 4] resized-image pixels, "logits": [P], "valid": [P] bool,
     "anchor_index": [P] int32 (flattened over the padded map)}, P = ``post_nms_topk``,
    sorted by logit.
  """
  h, w, a = logits.shape
  inside = ((jnp.arange(h)[:, None] < feature_hw[0]) & (jnp.arange(w)[None, :] < feature_hw[1]))
  flat = jnp.where(inside[..., None], logits, -jnp.inf).reshape(-1)
  k = min(cfg.pre_nms_topk, flat.shape[0])
  scores, index = jax.lax.top_k(flat, k)
  anchors = grid_anchors(cells, h, w, cfg.feature_stride, cfg.anchor_offset)[index]
  boxes = apply_deltas(deltas.reshape(-1, 4)[index], anchors, cfg.rpn_box_weights)
  boxes = clip(boxes, image_hw)
  nonempty = ((boxes[:, 2] - boxes[:, 0] > cfg.rpn_min_size)
              & (boxes[:, 3] - boxes[:, 1] > cfg.rpn_min_size))
  keep, valid = nms_sorted(boxes, nonempty & jnp.isfinite(scores), cfg.rpn_nms_thresh,
                           cfg.post_nms_topk)
  return {"boxes": boxes[keep], "logits": jnp.where(valid, scores[keep], -jnp.inf),
          "valid": valid, "anchor_index": index[keep]}
