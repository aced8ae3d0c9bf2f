"""FasterRCNN: backbone -> RPN proposals -> RoIPool -> res5 head -> class/box/attribute heads.

One Flax module with a method per stage so tests can teacher-force any stage
(``model.apply(variables, ..., method="box_head")``). Inputs are a padded batch from
``preprocess`` (every image of a batch in the same size bucket) plus each image's valid size;
every output has a fixed shape (``post_nms_topk`` proposals with a validity mask).
"""

from __future__ import annotations

import flax.linen as nn
import jax

from vilbert_jax.detection.backbone import ResNetC4, valid_sizes
from vilbert_jax.detection.config import DetectorConfig
from vilbert_jax.detection.roi_heads import BoxPredictor, Res5Head
from vilbert_jax.detection.roi_pool import roi_pool
from vilbert_jax.detection.rpn import RPNHead, propose


class FasterRCNN(nn.Module):
  """The bottom-up-attention detector (params: backbone, rpn, res5, box_predictor)."""

  cfg: DetectorConfig

  def setup(self):
    self.backbone = ResNetC4(self.cfg)
    self.rpn = RPNHead(self.cfg)
    self.res5 = Res5Head(self.cfg)
    self.box_predictor = BoxPredictor(self.cfg)

  def features(self, images: jax.Array, image_hw: jax.Array) -> jax.Array:
    """[B, H, W, 3] preprocessed images, [B, 2] valid sizes -> res4 [B, H/16, W/16, C4]."""
    return self.backbone(images, image_hw)

  def rpn_outputs(self, res4: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """res4 -> (logits [B, H4, W4, A], deltas [B, H4, W4, A, 4], cell anchors [A, 4])."""
    return self.rpn(res4)

  def proposals(self, res4: jax.Array, image_hw: jax.Array) -> dict[str, jax.Array]:
    """res4 and [B, 2] image sizes -> ``rpn.propose`` outputs with a batch axis."""
    logits, deltas, cells = self.rpn(res4)
    feature_hw = valid_sizes(image_hw, self.cfg)[-1]
    return jax.vmap(lambda l, d, f, i: propose(l, d, cells, f, i, self.cfg))(
        logits, deltas, feature_hw, image_hw)

  def box_head(self, res4: jax.Array, rois: jax.Array, rois_inside_map: bool = True
               ) -> tuple[jax.Array, jax.Array, jax.Array | None, jax.Array]:
    """res4 [B, H4, W4, C4], rois [B, R, 4] (resized-image pixels) -> (pooled [B, R, C5],
    class logits [B, R, K+1], attribute logits [B, R, A+1] or None, deltas [B, R, 4K])."""
    cfg = self.cfg
    crops = jax.vmap(lambda f, r: roi_pool(f, r, 1.0 / cfg.feature_stride,
                                           cfg.pooler_resolution, rois_inside_map))(res4, rois)
    b, r = crops.shape[:2]
    pooled = self.res5(crops.reshape(b * r, *crops.shape[2:]))
    cls_logits, attr_logits, deltas = self.box_predictor(pooled)
    split = lambda x: None if x is None else x.reshape(b, r, -1)  # noqa: E731
    return split(pooled), split(cls_logits), split(attr_logits), split(deltas)

  def __call__(self, images: jax.Array, image_hw: jax.Array) -> dict[str, jax.Array]:
    """Full forward pass: proposals and every per-proposal output (see ``box_head``)."""
    res4 = self.features(images, image_hw)
    props = self.proposals(res4, image_hw)
    pooled, cls_logits, attr_logits, deltas = self.box_head(res4, props["boxes"])
    out = dict(props, pooled=pooled, cls_logits=cls_logits, box_deltas=deltas)
    if attr_logits is not None:
      out["attr_logits"] = attr_logits
    return out
