"""Which proposals become an image's regions: the two selection protocols.

``bottom_up`` (what ViLBERT's features used; ``get_detections_from_im`` of
bottom-up-attention's ``generate_tsv.py``), over the proposals fed to the box head:
1. per foreground class, greedy NMS over all proposals scored by that class's probability,
   IoU > ``nms_thresh`` (0.3) with Caffe "+1" areas, in descending score;
2. ``max_conf[i]`` = best class probability of box i among the classes where it survived
   (0 if none);
3. keep the boxes with ``max_conf >= conf_thresh`` (0.2) in ascending proposal order; if
   fewer than ``min_boxes`` (10), the ``min_boxes`` highest ``max_conf`` instead; if more
   than ``max_boxes`` (36), the ``max_boxes`` highest (both in descending order);
4. report their proposal boxes (not the regressed ones), pooled features and the full class
   distribution, background first.

``port`` (the PyTorch port's own rule): each proposal's best foreground class and its
class-specific regressed box (clipped); class-agnostic greedy NMS over those boxes at the
first threshold of ``NMS_THRESH_TEST`` (0.5, 0.6, 0.7) that leaves at least
``MIN_DETECTIONS``, keeping the first ``MAX_DETECTIONS``. (The port crashes when no threshold
leaves enough; here the last threshold's boxes are kept.)

Both work on fixed shapes with validity masks; ties are broken by lower proposal index.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from vilbert_jax.detection.boxes import apply_deltas, clip
from vilbert_jax.detection.config import DetectorConfig
from vilbert_jax.detection.nms import nms_sorted, survivors_per_class


@dataclasses.dataclass(frozen=True)
class Protocol:
  """An extraction protocol: input size and selection rule."""

  name: str  # "bottom_up" or "port".
  min_size: int  # Shorter side after resizing.
  max_size: int  # Cap on the longer side.
  conf_thresh: float = 0.2  # bottom_up: keep boxes with max_conf >= this ...
  min_boxes: int = 10  # ... but at least this many ...
  max_boxes: int = 36  # ... and at most this many.
  nms_thresh: float = 0.3  # bottom_up per-class NMS IoU threshold.

  def __post_init__(self):
    if self.name not in ("bottom_up", "port"):
      raise ValueError(f"protocol {self.name!r}: expected 'bottom_up' or 'port'")
    if not 1 <= self.min_boxes <= self.max_boxes:
      raise ValueError(f"protocol {self.name}: need 1 <= min_boxes ({self.min_boxes}) <= "
                       f"max_boxes ({self.max_boxes})")

  @property
  def num_outputs(self) -> int:
    """Fixed number of output slots (the most boxes an image can get)."""
    return self.max_boxes


def get_protocol(protocol: "str | Protocol", cfg: DetectorConfig) -> Protocol:
  """"bottom_up" (600 / 1000, 0.2, 10-36 boxes), "port" (the config's sizes and
  MIN/MAX_DETECTIONS) or a ``Protocol`` as is."""
  if isinstance(protocol, Protocol):
    return protocol
  if protocol == "bottom_up":
    return Protocol("bottom_up", 600, 1000)
  if protocol == "port":
    return Protocol("port", cfg.min_size_test, cfg.max_size_test,
                    min_boxes=cfg.min_detections, max_boxes=cfg.max_detections)
  raise ValueError(f"protocol {protocol!r}: expected 'bottom_up', 'port' or a Protocol")


def bottom_up_max_conf(boxes: jax.Array, cls_prob: jax.Array, valid: jax.Array,
                       nms_thresh: float) -> jax.Array:
  """[R] best surviving class probability (0: survived nowhere; -1: invalid proposal).

  boxes [R, 4] (any pixel space; the rule uses raw pixels), cls_prob [R, K+1] background
  first, valid [R] bool.
  """
  fg = cls_prob[:, 1:]
  survive = survivors_per_class(boxes, fg, valid, nms_thresh, plus_one=True)
  best = jnp.max(jnp.where(survive, fg, 0.0), axis=1)
  return jnp.where(valid, best, -1.0)


def bottom_up_keep(max_conf: jax.Array, valid: jax.Array, protocol: Protocol
                   ) -> tuple[jax.Array, jax.Array]:
  """Step 3 of the rule: (indices [max_boxes] int32, mask [max_boxes] bool)."""
  r = max_conf.shape[0]
  index = jnp.arange(r)
  passing = valid & (max_conf >= protocol.conf_thresh)
  n_pass = jnp.sum(passing)
  ascending = jnp.argsort(jnp.where(passing, index, r + index))
  descending = jnp.argsort(-max_conf, stable=True)
  few, many = n_pass < protocol.min_boxes, n_pass > protocol.max_boxes
  count = jnp.where(few, jnp.minimum(protocol.min_boxes, jnp.sum(valid)),
                    jnp.where(many, protocol.max_boxes, n_pass))
  order = jnp.where(few | many, descending, ascending)
  slots = protocol.max_boxes
  if slots > r:
    order = jnp.pad(order, (0, slots - r))
  mask = jnp.arange(slots) < count
  return jnp.where(mask, order[:slots], 0).astype(jnp.int32), mask


def port_keep(proposals: jax.Array, box_deltas: jax.Array, cls_probs: jax.Array,
              valid: jax.Array, image_hw: jax.Array, cfg: DetectorConfig
              ) -> dict[str, jax.Array]:
  """The port's rule for one image.

  Args:
    proposals [R, 4] resized pixels; box_deltas [R, 4K]; cls_probs [R, K+1] background last;
    valid [R]; image_hw [2] the resized size (for clipping).

  Returns:
    {"keep": [MAX_DETECTIONS] int32 proposal indices in output order, "mask": bool,
     "boxes": [MAX_DETECTIONS, 4] clipped regressed boxes (resized pixels),
     "classes": foreground ids, "scores": their probabilities, "threshold": NMS threshold used}
  """
  k = cfg.num_classes
  boxes = apply_deltas(box_deltas, proposals, cfg.box_weights).reshape(-1, box_deltas.shape[1]
                                                                       // 4, 4)
  boxes = clip(boxes, image_hw)
  fg = cls_probs[:, :k]
  classes = jnp.argmax(fg, axis=1)
  scores = jnp.where(valid, jnp.max(fg, axis=1), -jnp.inf)
  best = boxes[jnp.arange(boxes.shape[0]), classes if boxes.shape[1] > 1 else 0]
  order = jnp.argsort(-scores, stable=True)
  results = [nms_sorted(best[order], valid[order], t, cfg.max_detections)
             for t in cfg.nms_thresh_test]
  counts = jnp.stack([jnp.sum(m) for _, m in results])
  enough = counts >= cfg.min_detections
  choice = jnp.where(jnp.any(enough), jnp.argmax(enough), len(results) - 1)
  keep = order[jnp.stack([i for i, _ in results])[choice]]
  mask = jnp.stack([m for _, m in results])[choice]
  return {"keep": keep.astype(jnp.int32), "mask": mask, "boxes": best[keep],
          "classes": classes[keep], "scores": scores[keep],
          "threshold": jnp.asarray(cfg.nms_thresh_test)[choice]}
