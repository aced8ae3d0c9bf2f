"""VQA answer normalisation, vocabulary, soft scores and the official accuracy."""
import numpy as np
import pytest

from vilbert_jax.data.vqa_answers import (answer_vocabulary, normalize_answer, soft_scores,
                                          vqa_accuracy)


@pytest.mark.parametrize("raw, normalized", [
    ("Two", "2"), ("the Cat.", "cat"), ("dont know", "don't know"), ("1,000", "1000"),
    ("yes!", "yes"), ("an apple", "apple"), ("black/white", "black white"), ("3.5", "3.5"),
])
def test_normalize_answer(raw, normalized):
  assert normalize_answer(raw) == normalized


def test_soft_scores_steps():
  vocab = {"dog": 0, "cat": 1, "cup": 2, "car": 3, "hat": 4}
  answers = ["dog"] * 4 + ["cat"] * 3 + ["Cup"] * 2 + ["car"] + ["zzz"]
  np.testing.assert_allclose(soft_scores(answers, vocab), [1.0, 0.9, 0.6, 0.3, 0.0])


def test_answer_vocabulary_min_count_and_order():
  majority = ["Yes"] * 10 + ["two"] * 9 + ["2"] * 1 + ["red"] * 3 + ["no"] * 10
  assert answer_vocabulary(majority) == ["2", "no", "yes"]
  assert answer_vocabulary(majority, min_count=3) == ["2", "no", "yes", "red"]


def test_vqa_accuracy_leave_one_out():
  answers = ["red"] * 2 + ["blue"] * 8
  assert vqa_accuracy("Red", answers) == pytest.approx((8 * 2 / 3 + 2 * 1 / 3) / 10)
  assert vqa_accuracy("blue", answers) == 1.0
  assert vqa_accuracy("green", answers) == 0.0
