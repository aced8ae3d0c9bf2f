"""What float16 feature storage (``--float16`` builds) costs in accuracy, measured against the
original implementation's float64 outputs."""

import numpy as np

import vilbert_jax as vj
from reference import model_inputs, reference, relative_error, small_config

# Max error relative to each output's largest magnitude: float32 features give <= 1e-5
# (tests/test_parity.py); float16 storage rounds each feature to 11 significant bits.
FLOAT16_TOL = 5e-4  # measured: 2.0e-4 (alignment logits), 3.8e-5 to 1.6e-4 elsewhere


def test_float16_stored_features_stay_close_to_the_original():
  ref = reference("original_small")
  cfg = small_config()
  params = vj.convert.original_to_flax(vj.convert.load_state_dict(
      "tests/fixtures/original_small.npz"), cfg)
  inputs = list(model_inputs(ref))
  inputs[3] = inputs[3].astype(np.float16).astype(np.float32)  # image_feat as stored
  out = vj.ViLBERTForPretraining(cfg).apply({"params": params}, *inputs, deterministic=True)
  errors = {name: relative_error(getattr(out, ours), ref[f"out64/{name}"]) for name, ours in (
      ("sequence_output_t", "text_sequence"), ("sequence_output_v", "image_sequence"),
      ("pooled_output_t", "text_pooled"), ("pooled_output_v", "image_pooled"),
      ("prediction_scores_t", "mlm_logits"), ("prediction_scores_v", "region_logits"),
      ("seq_relationship_score", "alignment_logits"))}
  print("float16 features, max relative error:", {k: f"{v:.1e}" for k, v in errors.items()})
  assert max(errors.values()) <= FLOAT16_TOL, errors
  assert max(errors.values()) > 1e-6  # the rounding is visible: the test measures something
