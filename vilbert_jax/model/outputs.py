"""Output records of the models (pytrees, so they pass through ``jax.jit``)."""

from __future__ import annotations

from typing import Optional

import flax.struct
import jax


@flax.struct.dataclass
class BackboneOutput:
  """What the two-stream (or single-stream) backbone computes."""

  text_sequence: jax.Array  # [B, T, d_t] last text layer ([B, T+1, d_t] with task tokens).
  image_sequence: jax.Array  # [B, R, d_v] last visual layer (IMG token at 0).
  text_pooled: jax.Array  # [B, d_b] ReLU pooler of [CLS] (single-stream: the tanh pooler).
  image_pooled: jax.Array  # [B, d_b] ReLU pooler of IMG (single-stream: the tanh pooler).
  pooled: jax.Array  # [B, d_b] fused vector: text_pooled * image_pooled (single-stream: pooled).


@flax.struct.dataclass
class PretrainingOutput:
  """Backbone outputs plus the logits of the three pretraining heads (float32)."""

  text_sequence: jax.Array  # [B, T, d_t]
  image_sequence: jax.Array  # [B, R, d_v]
  text_pooled: jax.Array  # [B, d_b]
  image_pooled: jax.Array  # [B, d_b]
  pooled: jax.Array  # [B, d_b]
  mlm_logits: jax.Array  # [B, T, vocab] masked-word logits.
  region_logits: jax.Array  # [B, R, v_target_size], IMG slot included.
  alignment_logits: jax.Array  # [B, 2]; class 0 = the caption matches the image.


@flax.struct.dataclass
class TaskOutput:
  """Outputs of the downstream-task model; original names in brackets. A model built with
  ``outputs=(...)`` computes only those heads and leaves the others None."""

  pooled: jax.Array  # [B, d_b] fused pooled vector before dropout.
  vqa_logits: Optional[jax.Array] = None  # [B, num_answers] (vil_prediction).
  retrieval_score: Optional[jax.Array] = None  # [B] caption-image / VCR option score (vil_logit).
  alignment_logits: Optional[jax.Array] = None  # [B, 2] alignment head (vil_binary_prediction).
  region_logits: Optional[jax.Array] = None  # [B, R, v_target_size] (vision_prediction).
  grounding_logits: Optional[jax.Array] = None  # [B, R] region score + mask (vision_logit).
  # With task tokens the next two have T+1 rows, the task token's at 1 (as the original).
  mlm_logits: Optional[jax.Array] = None  # [B, T, vocab] (linguisic_prediction).
  text_token_logits: Optional[jax.Array] = None  # [B, T] (linguisic_logit).
  gqa_logits: Optional[jax.Array] = None  # [B, 1533] 12-in-1 only (vil_prediction_gqa).
  pair_logits: Optional[jax.Array] = None  # [B/2, 2] 12-in-1 NLVR2 head, even B only.
  entailment_logits: Optional[jax.Array] = None  # [B, 3] 12-in-1 only (vil_tri_prediction).
