"""Official transfer-task metrics: hand-computed cases from their definitions."""
import json

import numpy as np
import pytest

from vilbert_jax import metrics
from vilbert_jax.metrics import retrieval

# --- VQA -----------------------------------------------------------------------------------


@pytest.mark.parametrize("raw, expected", [
    ("yes.", "yes"), ("Yes", "yes"), ("  yes \n", "yes"), ("red\tball", "red ball"),
    ("two", "2"), ("Two Dogs", "2 dogs"), ("none", "0"), ("ten", "10"),
    ("a dog", "dog"), ("the dog", "dog"), ("an apple", "apple"), ("the", ""),
    ("dont", "don't"), ("whats", "what's"), ("don't", "don't"), ("thats it", "that's it"),
    # a mark next to a space is deleted, elsewhere it becomes a space
    ("yes, no", "yes no"), ("black-and-white", "black and white"), ("(red)", "red"),
    ("t-shirt!", "t shirt"),
    # a comma between digits anywhere: every mark is deleted
    ("1,000", "1000"), ("1,000-2,000!", "10002000"),
    # periods go unless a digit follows them
    ("3.5", "3.5"), ("5.", "5"), ("a.m.", "am"), (".5", ".5"),
    # official quirks: capitalised contraction keys never match, one entry is reversed
    ("Im", "im"), ("somebody'd", "somebodyd"),
])
def test_normalize_answer(raw, expected):
  assert metrics.normalize_answer(raw) == expected


def test_normalize_answer_removes_at_most_32_periods():
  # The official script passes re.UNICODE (32) as the count of re.sub.
  assert metrics.normalize_answer("." * 40) == "." * 8


def test_soft_scores_0_to_1():
  answers = ["red"] + ["blue"] * 2 + ["green"] * 3 + ["white"] * 4
  assert metrics.soft_scores(answers) == {"red": 0.3, "blue": 0.6, "green": 0.9, "white": 1.0}
  assert metrics.soft_scores(["yes"] * 10) == {"yes": 1.0}
  # "Two", "2." and "two" all normalise to "2": count 3 -> 0.9 (exactly, not 0.8999...)
  scores = metrics.soft_scores(["Two", "2.", "two"] + ["3"] * 7)
  assert scores == {"2": 0.9, "3": 1.0}
  assert scores.get("4", 0.0) == 0.0


def test_build_answer_vocab_counts_normalised_majorities():
  questions = (
      [["Yes"] * 6 + ["no"] * 4] * 3      # majority "yes" x3
      + [["Two"] * 5 + ["3"] * 5] * 2     # tie: first listed, "2", x2
      + [["a dog", "dog", "cat"]] * 2     # "dog" x2 (articles dropped before counting)
      + [["blue"] * 10]                   # x1: below min_count
      + [[]])                             # no answers: ignored
  assert metrics.build_answer_vocab(questions, min_count=2) == ["yes", "2", "dog"]
  assert metrics.build_answer_vocab(questions, min_count=3) == ["yes"]
  assert metrics.build_answer_vocab(questions) == []


@pytest.mark.parametrize("matches, expected", [
    # k of the 10 humans said the prediction. Leaving out one of the k matching humans leaves
    # k - 1 matches, leaving out one of the 10 - k others leaves k; average min(1, m/3):
    (0, 0.0),
    (1, 0.3),  # (1 * 0/3 + 9 * 1/3) / 10 = 3/10
    (2, 0.6),  # (2 * 1/3 + 8 * 2/3) / 10 = (2/3 + 16/3) / 10 = 6/10
    (3, 0.9),  # (3 * 2/3 + 7 * 1) / 10 = (2 + 7) / 10
    (4, 1.0),  # (4 * 3/3 + 6 * 1) / 10: 3 matches are left in every subset
    (10, 1.0),
])
def test_vqa_accuracy_leave_one_out(matches, expected):
  gt = ["dog"] * matches + ["cat"] * (10 - matches)
  assert metrics.vqa_accuracy("dog", gt) == pytest.approx(expected, abs=1e-12)


def test_vqa_accuracy_normalises_like_the_official_script():
  # The prediction is fully normalised.
  assert metrics.vqa_accuracy("Two.", ["2"] * 10) == 1.0
  assert metrics.vqa_accuracy("A dog", ["dog"] * 3 + ["cat"] * 7) == pytest.approx(0.9)
  assert metrics.vqa_accuracy("dont know", ["don't know"] * 10) == 1.0
  # Differing human answers get the punctuation step: "yes." -> "yes", 3 matches.
  assert metrics.vqa_accuracy("yes", ["yes."] * 3 + ["no"] * 7) == pytest.approx(0.9)
  # ...and only that step: number words are not mapped on the human side, so no match.
  assert metrics.vqa_accuracy("2", ["two"] * 3 + ["no"] * 7) == 0.0
  # Identical human answers are compared as they are (the annotations are pre-normalised).
  assert metrics.vqa_accuracy("yes", ["yes."] * 10) == 0.0
  with pytest.raises(ValueError, match="at least one human answer"):
    metrics.vqa_accuracy("yes", [])


def test_vqa_accumulator_reports_percent_per_answer_type():
  acc = metrics.VQAAccumulator()
  assert acc.add(1, "yes", ["yes"] * 10, "yes/no") == 1.0
  assert acc.add(2, "three", ["3"] * 3 + ["4"] * 7, "number") == pytest.approx(0.9)
  acc.add(3, "red", ["red"] + ["blue"] * 9, "other")   # 0.3
  acc.add(4, "green", ["blue"] * 10, "other")          # 0.0
  assert len(acc) == 4
  # overall 100 * (1 + 0.9 + 0.3 + 0) / 4 = 55; other 100 * 0.3 / 2 = 15
  assert acc.result() == {"overall": 55.0,
                          "per_answer_type": {"number": 90.0, "other": 15.0, "yes/no": 100.0}}
  with pytest.raises(ValueError, match="already added"):
    acc.add(2, "yes", ["yes"] * 10, "yes/no")
  acc_two_thirds = metrics.VQAAccumulator()
  for qid, pred in enumerate(["dog", "dog", "cat"]):
    acc_two_thirds.add(qid, pred, ["dog"] * 10, "other")
  assert acc_two_thirds.result()["overall"] == 66.67  # rounded to 2 decimals
  with pytest.raises(ValueError, match="no question"):
    metrics.VQAAccumulator().result()


def test_write_predictions_official_json(tmp_path):
  path = tmp_path / "sub" / "vqa_test-dev_results.json"
  metrics.write_predictions(str(path), [(np.int64(7), "yes"), (3, "2")])
  assert json.loads(path.read_text()) == [{"question_id": 7, "answer": "yes"},
                                          {"question_id": 3, "answer": "2"}]
  with pytest.raises(ValueError, match="two predictions"):
    metrics.write_predictions(str(path), [(1, "yes"), (1, "no")])


# --- Retrieval -----------------------------------------------------------------------------


def _brute_force_ranks(scores, gt):
  ranks = []
  for c in range(scores.shape[0]):
    rank = 1
    for i in range(scores.shape[1]):
      if i != gt[c] and scores[c, i] >= scores[c, gt[c]]:
        rank += 1
    ranks.append(rank)
  return np.array(ranks)


@pytest.mark.parametrize("seed, num_levels", [(0, None), (1, 4), (2, 2)])
def test_recall_matches_brute_force(seed, num_levels):
  rng = np.random.default_rng(seed)
  scores = rng.normal(size=(50, 20))
  if num_levels:  # few distinct values: many ties
    scores = rng.integers(0, num_levels, size=(50, 20)).astype(float)
  gt = rng.integers(0, 20, size=50)
  ranks = _brute_force_ranks(scores, gt)
  np.testing.assert_array_equal(metrics.retrieval_ranks(scores, gt), ranks)
  result = metrics.recall_at_k(scores, gt)
  for k in (1, 5, 10):
    assert result[f"R@{k}"] == pytest.approx(100 * np.mean(ranks <= k))
  assert result["median_rank"] == np.floor(np.median(ranks))
  assert result["mean_rank"] == pytest.approx(np.mean(ranks))


def test_recall_hand_case_with_ties():
  scores = np.array([[0.9, 0.5, 0.9, 0.1],    # gt 2 ties with image 0: rank 2
                     [0.5, 0.9, 0.5, 0.1],    # gt 0 ties with image 2, below 1: rank 3
                     [0.3, 0.3, 0.3, 0.3],    # all tied (a collapsed model): rank 4, last
                     [0.4, 0.3, 0.2, 0.5]])   # gt 3 is first: rank 1
  gt = np.array([2, 0, 1, 3])
  np.testing.assert_array_equal(metrics.retrieval_ranks(scores, gt), [2, 3, 4, 1])
  result = metrics.recall_at_k(scores, gt, ks=(1, 2, 5))
  # ranks 2, 3, 4, 1: median 2.5 -> floor 2 (original: floor(median(0-based) + 1))
  assert result == {"R@1": 25.0, "R@2": 50.0, "R@5": 100.0, "median_rank": 2.0,
                    "mean_rank": 2.5}


def test_recall_rejects_bad_inputs():
  with pytest.raises(ValueError, match="outside"):
    metrics.recall_at_k(np.zeros((2, 3)), np.array([0, 3]))
  with pytest.raises(ValueError, match="non-finite"):
    metrics.recall_at_k(np.array([[0.0, np.nan]]), np.array([0]))
  with pytest.raises(ValueError, match="integers"):
    metrics.recall_at_k(np.zeros((2, 3)), np.array([0.0, 1.0]))


def test_score_matrix_accumulator_block_by_block():
  rng = np.random.default_rng(3)
  scores = rng.normal(size=(12, 7))
  gt = rng.integers(0, 7, size=12)
  acc = metrics.ScoreMatrixAccumulator(12, 7)
  blocks = [(rows, cols) for rows in np.array_split(rng.permutation(12), 3)
            for cols in np.array_split(rng.permutation(7), 2)]
  for rows, cols in blocks[:-1]:
    acc.add(rows, cols, scores[np.ix_(rows, cols)])
  rows, cols = blocks[-1]
  assert acc.num_unfilled == rows.size * cols.size
  with pytest.raises(ValueError, match="incomplete.*unfilled"):
    acc.result(gt)
  for r in rows:  # one caption against a batch of images: a vector block
    acc.add(int(r), cols, scores[r, cols])
  assert acc.num_unfilled == 0
  np.testing.assert_array_equal(acc.matrix(), scores)
  assert acc.result(gt) == metrics.recall_at_k(scores, gt)
  with pytest.raises(ValueError, match="filled twice"):
    acc.add(0, 0, 1.0)


def test_score_matrix_accumulator_rejects_bad_blocks():
  acc = retrieval.ScoreMatrixAccumulator(4, 3)
  with pytest.raises(ValueError, match="shape"):
    acc.add([0, 1], [0, 1, 2], np.zeros((3, 2)))
  with pytest.raises(ValueError, match="distinct"):
    acc.add([0, 0], [1], np.zeros((2, 1)))
  with pytest.raises(ValueError, match=r"\[0, 3\)"):
    acc.add([0], [3], np.zeros((1, 1)))
  with pytest.raises(ValueError, match="non-finite"):
    acc.add([0], [1], np.array([[np.inf]]))
  assert acc.num_unfilled == 12  # nothing was written by the failed calls


# --- Grounding -----------------------------------------------------------------------------


def test_box_iou_plus_one_pixel_convention():
  box = [0, 0, 9, 9]                     # 10 x 10 = 100 pixels
  boxes_b = np.array([
      [0, 0, 9, 9],                      # identical: 1
      [20, 20, 29, 29],                  # disjoint: 0
      [0, 0, 19, 19],                    # contains it: 100 / 400
      [5, 0, 14, 9],                     # half of each: 50 / (100 + 100 - 50)
      [9, 0, 18, 9],                     # shares the column x = 9: 10 / 190
  ])
  np.testing.assert_allclose(metrics.box_iou(np.array([box]), boxes_b),
                             [[1.0, 0.0, 0.25, 1 / 3, 10 / 190]])
  # [0, 0, 19, 9] (200 px) vs its right and left halves (100 px each): exactly 0.5; the two
  # halves do not touch (x = 9 and x = 10 are different pixel columns)
  halves = np.array([[10, 0, 19, 9], [0, 0, 9, 9]])
  iou = metrics.box_iou(np.array([[0, 0, 19, 9], [10, 0, 19, 9]]), halves)
  assert iou.shape == (2, 2)
  np.testing.assert_allclose(iou, [[0.5, 0.5], [1.0, 0.0]])
  assert metrics.box_iou(np.array([[3, 3, 3, 3]]), np.array([[3, 3, 3, 3]]))[0, 0] == 1.0
  with pytest.raises(ValueError, match="x2 < x1"):
    metrics.box_iou(np.array([[10, 10, 5, 20]]), boxes_b)
  with pytest.raises(ValueError, match=r"\[num_boxes, 4\]"):
    metrics.box_iou(np.zeros((2, 5)), boxes_b)


def test_grounding_targets_soft_iou():
  np.testing.assert_allclose(metrics.grounding_targets([[0.2, 0.5, 0.7, 0.49999]]),
                             [[0.0, 0.5, 0.7, 0.0]])


def test_grounding_accuracy_with_masked_regions():
  scores = np.array([[5.0, 1.0, 9.0, 0.0],   # region 2 is padding: top real one is 0
                     [0.0, 3.0, 2.0, 0.0],   # top is 1
                     [0.0, 1.0, 7.0, 7.0]])  # tie between 2 and 3: the first, 2
  ious = np.array([[0.6, 0.1, 0.9, 0.0],
                   [0.9, 0.4, 0.8, 0.0],
                   [0.0, 0.0, 0.5, 0.0]])
  mask = np.array([[1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]])
  np.testing.assert_array_equal(metrics.grounding_correct(scores, ious, mask),
                                [True, False, True])
  assert metrics.grounding_accuracy(scores, ious, mask) == pytest.approx(2 / 3)
  # without the mask the padding region 2 of row 0 would win (and still be right)
  assert metrics.grounding_accuracy(scores, ious, np.ones_like(mask)) == pytest.approx(2 / 3)
  with pytest.raises(ValueError, match="no unmasked region"):
    metrics.grounding_accuracy(scores, ious, np.array([[1, 0, 0, 0], [0, 0, 0, 0], [1] * 4]))


# --- VCR -----------------------------------------------------------------------------------


def test_vcr_q_ar_needs_both_right():
  qa_logits = np.array([[3.0, 1, 0, 0], [0, 2, 1, 0], [0, 0, 0, 1], [1, 0, 0, 0]])
  qa_labels = np.array([0, 1, 2, 0])          # right, right, wrong, right
  qar_logits = np.array([[0, 0, 5.0, 1], [1, 0, 0, 0], [0, 0, 0, 9], [0, 4, 0, 0]])
  qar_labels = np.array([2, 3, 3, 1])         # right, wrong, right, right
  np.testing.assert_array_equal(metrics.multiple_choice_correct(qa_logits, qa_labels),
                                [True, True, False, True])
  assert metrics.vcr_accuracy(qa_logits, qa_labels, qar_logits, qar_labels) == {
      "Q->A": 0.75, "QA->R": 0.75, "Q->AR": 0.5}   # both right: questions 0 and 3
  with pytest.raises(ValueError, match="same questions"):
    metrics.vcr_accuracy(qa_logits, qa_labels, qar_logits[:3], qar_labels[:3])
  with pytest.raises(ValueError, match=r"\[0, 4\)"):
    metrics.multiple_choice_correct(qa_logits, np.array([0, 1, 2, 4]))
