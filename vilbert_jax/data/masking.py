"""Pretraining masking of SPEC section 5, as pure numpy functions of a random generator."""
from __future__ import annotations

import dataclasses
from typing import Collection, Tuple

import numpy as np


@dataclasses.dataclass(frozen=True)
class MaskingConfig:
  """Probabilities of the paper's masking.

  Attributes:
    word_prob: chance a text token (not [CLS]/[SEP]/padding) is selected.
    word_mask_frac / word_random_frac: of selected tokens, the fraction set to [MASK] / to a
      random vocabulary id; the rest stay unchanged.
    region_prob: chance a real region is selected.
    region_zero_frac: of selected regions, the fraction whose feature is zeroed.
    negative_prob: chance the caption is replaced by another image's caption.
    masked_loss_on_mismatch: False sets the word and region labels of replaced-caption pairs
      to -1 (the follow-up code's variant); True keeps them (the original).
  """
  word_prob: float = 0.15
  word_mask_frac: float = 0.8
  word_random_frac: float = 0.1
  region_prob: float = 0.15
  region_zero_frac: float = 0.9
  negative_prob: float = 0.5
  masked_loss_on_mismatch: bool = True


def mask_tokens(rng: np.random.Generator, input_ids: np.ndarray, special_ids: Collection[int],
                mask_id: int, vocab_size: int,
                config: MaskingConfig = MaskingConfig()) -> Tuple[np.ndarray, np.ndarray]:
  """BERT masking of one sequence.

  Args:
    input_ids: [T] int32 ids including [CLS]/[SEP]/padding.
    special_ids: ids never selected (pad, cls, sep, ...).

  Returns:
    masked ids [T] int32 and labels [T] int32 (original id where selected, else -1).
  """
  specials = np.fromiter(special_ids, np.int64, len(special_ids))
  selectable = (input_ids[:, None] != specials).all(axis=1)
  draws = rng.random((2,) + input_ids.shape)  # [selection, action] per token
  random_ids = rng.integers(0, vocab_size, size=input_ids.shape)
  selected = (draws[0] < config.word_prob) & selectable
  masked = input_ids.copy()
  to_mask = selected & (draws[1] < config.word_mask_frac)
  to_random = selected & (draws[1] >= config.word_mask_frac) & (
      draws[1] < config.word_mask_frac + config.word_random_frac)
  masked[to_mask] = mask_id
  masked[to_random] = random_ids[to_random]
  labels = np.where(selected, input_ids, -1).astype(np.int32)
  return masked.astype(np.int32), labels


def mask_regions(rng: np.random.Generator, num_regions: int,
                 config: MaskingConfig = MaskingConfig()) -> Tuple[np.ndarray, np.ndarray]:
  """Region masking of one image's real regions (no IMG token, no padding).

  Returns:
    zero_rows [num_regions] bool: regions whose feature is to be zeroed (selected, 90%);
    labels [num_regions] int32: 1 for selected regions, -1 otherwise.
  """
  selected = rng.random(num_regions) < config.region_prob
  zero_rows = selected & (rng.random(num_regions) < config.region_zero_frac)
  return zero_rows, np.where(selected, 1, -1).astype(np.int32)
