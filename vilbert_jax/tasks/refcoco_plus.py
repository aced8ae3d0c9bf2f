"""RefCOCO+: ground a referring expression to one of the image's regions.

Loss (SPEC 4): ``grounding_logits [B, R]`` (a ``Dense(d -> 1)`` score per visual token plus the
image mask as an additive -10000) against the soft targets (IoU with the ground-truth box, 0
below 0.5) by sigmoid cross-entropy averaged over the regions and multiplied by R. The IMG token
(whole-image box) is a candidate too. Accuracy: the top region's IoU with the truth >= 0.5.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import optax

from vilbert_jax import metrics
from vilbert_jax.data.pipeline import text
from vilbert_jax.tasks.base import Task


def grounding_loss(logits, target):
  """Mean sigmoid cross-entropy x number of regions; ``logits, target [B, R]``."""
  bce = optax.sigmoid_binary_cross_entropy(logits.astype(jnp.float32), target)
  return jnp.mean(bce) * logits.shape[-1]


class RefCOCOPlus(Task):
  """RefCOCO+ (and the synthetic referring expressions)."""

  name = "refcoco_plus"
  loader_task = "refer"
  outputs = ("grounding_logits",)
  targets = ("target", "region_iou", "region_boxes")
  progress_metric = "accuracy"
  task_id = 10  # 12-in-1 "TASK10" (refcoco+)

  def loss(self, out, batch):
    loss = grounding_loss(out.grounding_logits, batch["target"])
    best = jnp.argmax(out.grounding_logits, -1)
    iou = jnp.take_along_axis(batch["region_iou"], best[:, None], -1)[:, 0]
    return loss, {"loss/total": loss, "loss/grounding": loss,
                  "accuracy": jnp.mean(iou >= metrics.IOU_THRESHOLD)}

  def predict(self, out, batch):
    return {"scores": out.grounding_logits, "region_iou": batch["region_iou"],
            "image_mask": batch["image_mask"], "region_boxes": batch["region_boxes"]}

  def score(self, predictions, split):
    """Official accuracy (fraction); per expression the chosen box (pixels) and its IoU."""
    p = predictions
    correct = metrics.grounding_correct(p["scores"], p["region_iou"], p["image_mask"])
    best = np.argmax(np.where(p["image_mask"] > 0, p["scores"], -np.inf), -1).tolist()
    items = split.task_items("refer")
    image_ids = {}  # record -> image id: each record (features and all) is read once
    records = []
    for row, (example_id, region) in enumerate(zip(p["example_id"], best)):
      record, item = items.locate(int(example_id))
      if record not in image_ids:
        image_ids[record] = text(split.records[record]["image_id"])
      records.append({"example_id": int(example_id), "image_id": image_ids[record],
                      "expression_index": item, "region": region,
                      "box": p["region_boxes"][row, region].tolist(),
                      "iou": float(p["region_iou"][row, region]), "correct": bool(correct[row])})
    return {"accuracy": float(correct.mean())}, records

