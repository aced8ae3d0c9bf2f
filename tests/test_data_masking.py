"""Masking rates of SPEC section 5 within statistical bounds, on the pure functions."""
import numpy as np

from vilbert_jax.data.masking import MaskingConfig, mask_regions, mask_tokens

PAD, CLS, SEP, MASK, VOCAB = 0, 2, 3, 4, 1000


def _within(observed, p, n, sigmas=4.5):
  return abs(observed - p) <= sigmas * np.sqrt(p * (1 - p) / n)


def test_word_masking_rates_and_specials():
  rng = np.random.default_rng(0)
  n_seq, length = 3000, 36
  sel = mask = rand = kept = total = 0
  for _ in range(n_seq):
    real = int(rng.integers(5, 35))
    ids = np.full(length, PAD, np.int32)
    ids[0], ids[real + 1] = CLS, SEP
    ids[1:real + 1] = rng.integers(10, VOCAB, size=real)
    masked, labels = mask_tokens(rng, ids, {PAD, CLS, SEP}, MASK, VOCAB)
    special = np.isin(ids, [PAD, CLS, SEP])
    assert np.all(labels[special] == -1) and np.all(masked[special] == ids[special])
    chosen = labels != -1
    np.testing.assert_array_equal(labels[chosen], ids[chosen])
    np.testing.assert_array_equal(masked[~chosen], ids[~chosen])
    total += real
    sel += chosen.sum()
    mask += (masked[chosen] == MASK).sum()
    kept += (masked[chosen] == ids[chosen]).sum()
    rand += ((masked[chosen] != MASK) & (masked[chosen] != ids[chosen])).sum()
  assert _within(sel / total, 0.15, total)
  assert _within(mask / sel, 0.8, sel)
  assert _within(rand / sel, 0.1, sel)  # a random id equal to the original counts as kept
  assert _within(kept / sel, 0.1, sel)


def test_region_masking_rates():
  rng = np.random.default_rng(1)
  selected = zeroed = total = 0
  for _ in range(2000):
    n = int(rng.integers(10, 37))
    zero_rows, labels = mask_regions(rng, n)
    total += n
    selected += (labels == 1).sum()
    zeroed += zero_rows.sum()
    assert np.all(labels[zero_rows] == 1)  # only selected regions are zeroed
  assert _within(selected / total, 0.15, total)
  assert _within(zeroed / selected, 0.9, selected)


def test_probabilities_are_configurable():
  rng = np.random.default_rng(2)
  ids = np.arange(10, 46, dtype=np.int32)
  masked, labels = mask_tokens(rng, ids, set(), MASK, VOCAB,
                               MaskingConfig(word_prob=1.0, word_mask_frac=1.0))
  assert np.all(masked == MASK) and np.all(labels == ids)
  zero_rows, labels = mask_regions(rng, 5, MaskingConfig(region_prob=0.0))
  assert np.all(labels == -1) and not zero_rows.any()
