"""Loading the original implementation's reference numbers (tests/fixtures/original_small*)."""

from __future__ import annotations

import functools
import pathlib

import numpy as np

import vilbert_jax as vj

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
SMALL_CONFIG = FIXTURES / "original_small_config.json"


@functools.lru_cache(maxsize=None)
def reference(name: str = "original_small") -> dict[str, np.ndarray]:
  with np.load(FIXTURES / f"{name}.npz") as z:
    return {k: z[k] for k in z.files}


def small_config(**overrides) -> vj.ViLBERTConfig:
  return vj.ViLBERTConfig.from_original_json(SMALL_CONFIG, **overrides)


def model_inputs(ref: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
  """The positional model inputs of a reference file."""
  return tuple(ref[f"in/{k}"] for k in ("input_ids", "token_type_ids", "attention_mask",
                                        "image_feat", "image_loc", "image_attention_mask"))


def relative_error(got, want) -> float:
  """max |got - want| / max |want|."""
  want = np.asarray(want, np.float64)
  return float(np.max(np.abs(np.asarray(got, np.float64) - want)) / np.max(np.abs(want)))
