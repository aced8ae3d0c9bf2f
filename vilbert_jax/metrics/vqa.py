"""VQA v2: the official answer normalisation, soft targets, answer vocabulary and accuracy.

Everything here follows the official VQA evaluation script (``vqaEval.py`` of the VQA API) to
the letter, quirks included, so the numbers match the evaluation server and the papers:

* normalisation of an answer: newlines and tabs become spaces, ends are stripped, then
  punctuation (`_strip_punctuation`), then lower-casing, number words to digits, articles
  dropped and missing apostrophes restored (`_digits_articles_contractions`);
* accuracy of a prediction against the 10 human answers: the mean over the 10 leave-one-out
  subsets of 9 answers of ``min(1, matches / 3)``.

Soft training targets (SPEC section 5) count each distinct normalised answer among the 10:
score ``min(1, 0.3 * count)``, i.e. 0, 0.3, 0.6, 0.9 or 1.0.
"""
from __future__ import annotations

import collections
import json
import os
import re
from typing import Dict, Iterable, List, Sequence, Tuple, Union

# Marks that are deleted (or turned into a space, see `_strip_punctuation`). The apostrophe,
# the colon and the period are not among them; periods have their own rule.
_PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<",
                "@", "`", ",", "?", "!")
_COMMA_BETWEEN_DIGITS = re.compile(r"\d,\d")
# The official pattern is "(?!<=\d)(\.)(?!\d)": its "look-behind" is written as a look-ahead,
# which always succeeds before a period, so it removes every period not followed by a digit
# ("5." -> "5", "a.m." -> "am", "2.5" kept). This is the same pattern without the no-op part.
_PERIOD = re.compile(r"\.(?!\d)")
# The official call passes re.UNICODE (= 32) where `count` goes: at most 32 periods are removed.
_MAX_PERIODS_REMOVED = 32

_NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
_ARTICLES = frozenset({"a", "an", "the"})
# The official contractions table, applied word by word after lower-casing. Its entries with a
# capital "I" ("Im", "Ive", "Id've", "I'dve") can never match lower-cased text and its identity
# entries ("let's", "she's") change nothing, so they are left out. "somebody'd" -> "somebodyd"
# is reversed in the official table and kept as it is.
_CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've",
    "couldnt": "couldn't", "couldn'tve": "couldn't've", "couldnt've": "couldn't've",
    "didnt": "didn't", "doesnt": "doesn't", "dont": "don't", "hadnt": "hadn't",
    "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't", "havent": "haven't",
    "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd",
    "howll": "how'll", "hows": "how's", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've",
    "it'dve": "it'd've", "itll": "it'll", "maam": "ma'am", "mightnt": "mightn't",
    "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've",
    "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've",
    "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've",
    "shouldve": "should've", "shouldnt": "shouldn't", "shouldnt've": "shouldn't've",
    "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd", "somebodyd've": "somebody'd've",
    "somebody'dve": "somebody'd've", "somebodyll": "somebody'll", "somebodys": "somebody's",
    "someoned": "someone'd", "someoned've": "someone'd've", "someone'dve": "someone'd've",
    "someonell": "someone'll", "someones": "someone's", "somethingd": "something'd",
    "somethingd've": "something'd've", "something'dve": "something'd've",
    "somethingll": "something'll", "thats": "that's", "thered": "there'd",
    "thered've": "there'd've", "there'dve": "there'd've", "therere": "there're",
    "theres": "there's", "theyd": "they'd", "theyd've": "they'd've", "they'dve": "they'd've",
    "theyll": "they'll", "theyre": "they're", "theyve": "they've", "twas": "'twas",
    "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've",
    "werent": "weren't", "whatll": "what'll", "whatre": "what're", "whats": "what's",
    "whatve": "what've", "whens": "when's", "whered": "where'd", "wheres": "where's",
    "whereve": "where've", "whod": "who'd", "whod've": "who'd've", "who'dve": "who'd've",
    "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll", "whyre": "why're",
    "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all",
    "yall'll": "y'all'll", "y'allll": "y'all'll", "yall'd've": "y'all'd've",
    "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've", "youd": "you'd",
    "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll", "youre": "you're",
    "youve": "you've",
}
# Soft score by number of matching human answers; 4 or more give 1.0. A table rather than
# 0.3 * count, which gives 0.8999999999999999 for 3.
_SOFT_SCORE = (0.0, 0.3, 0.6, 0.9)


def _strip_punctuation(text: str) -> str:
  """The official punctuation step (case and spacing untouched).

  Each mark of `_PUNCTUATION` is deleted where the input has it next to a space ("yes, no" ->
  "yes no") and replaced by a space otherwise ("black-and-white" -> "black and white"); if the
  input contains a comma between two digits anywhere, every mark is deleted ("1,000" ->
  "1000"). The tests look at the input as given, not at the partly processed text. Then periods
  not followed by a digit are removed (see `_PERIOD`).
  """
  delete_all = _COMMA_BETWEEN_DIGITS.search(text) is not None
  out = text
  for mark in _PUNCTUATION:
    if delete_all or mark + " " in text or " " + mark in text:
      out = out.replace(mark, "")
    else:
      out = out.replace(mark, " ")
  return _PERIOD.sub("", out, count=_MAX_PERIODS_REMOVED)


def _digits_articles_contractions(text: str) -> str:
  """The official word step: lower-case, number words to digits, no articles, contractions."""
  words = [_NUMBER_WORDS.get(word, word) for word in text.lower().split()]
  return " ".join(_CONTRACTIONS.get(word, word) for word in words if word not in _ARTICLES)


def normalize_answer(answer: str) -> str:
  """The official normalisation of an answer string.

  Examples: "Yes." -> "yes", "Two" -> "2", "a dog" -> "dog", "dont" -> "don't",
  "1,000" -> "1000", "black-and-white" -> "black and white", "3.5" -> "3.5".

  Args:
    answer: a raw answer (predicted or human).

  Returns:
    the normalised answer: lower case, words separated by single spaces.
  """
  text = answer.replace("\n", " ").replace("\t", " ").strip()
  return _digits_articles_contractions(_strip_punctuation(text))


def soft_scores(answers: Sequence[str]) -> Dict[str, float]:
  """Soft target scores of one question from its human answers (SPEC section 5).

  Args:
    answers: the human answers of one question (10 in VQA v2), raw.

  Returns:
    {normalised answer: min(1, 0.3 * count)} for every distinct normalised answer, where count
    is how many of `answers` normalise to it: 0.3, 0.6, 0.9 or 1.0. Answers absent from the
    dict score 0.
  """
  counts = collections.Counter(normalize_answer(a) for a in answers)
  return {a: _SOFT_SCORE[n] if n < len(_SOFT_SCORE) else 1.0 for a, n in counts.items()}


def build_answer_vocab(answer_lists: Iterable[Sequence[str]], min_count: int = 9) -> List[str]:
  """The answer vocabulary: normalised majority answers of at least `min_count` questions.

  The majority answer of a question is the most frequent of its normalised human answers; a
  tie goes to the tied answer that comes first in its list. On VQA v2 train+val with the
  default `min_count` this gives the 3129 answers of the paper.

  Args:
    answer_lists: per question, its human answers (raw).
    min_count: least number of questions an answer must be the majority answer of.

  Returns:
    the kept answers, most frequent majority answer first, ties in alphabetical order.
  """
  majorities: collections.Counter = collections.Counter()
  for answers in answer_lists:
    if answers:
      counts = collections.Counter(normalize_answer(a) for a in answers)
      majorities[counts.most_common(1)[0][0]] += 1
  kept = [(answer, n) for answer, n in majorities.items() if n >= min_count]
  return [answer for answer, _ in sorted(kept, key=lambda item: (-item[1], item[0]))]


def vqa_accuracy(prediction: str, gt_answers: Sequence[str]) -> float:
  """Official VQA accuracy of one predicted answer, in [0, 1].

  The prediction is fully normalised (`normalize_answer`). As in the official script, the
  human answers get only the punctuation step, and only when they are not all identical: the
  official annotation files hold them already normalised, so pass them as they are there.
  With k of the n human answers equal to the prediction, the accuracy is the mean over the n
  leave-one-out subsets of min(1, matches / 3): for n = 10, k = 0, 1, 2, 3, >= 4 give 0, 0.3,
  0.6, 0.9, 1.

  Args:
    prediction: the predicted answer, raw.
    gt_answers: the human answers of the question (10 in VQA v2).

  Returns:
    the accuracy of the prediction.

  Raises:
    ValueError: if `gt_answers` is empty.
  """
  if not gt_answers:
    raise ValueError("vqa_accuracy needs at least one human answer, got none.")
  predicted = normalize_answer(prediction)
  gold = list(gt_answers)
  if len(set(gold)) > 1:
    gold = [_strip_punctuation(a) for a in gold]
  matches = [a == predicted for a in gold]
  total = sum(matches)
  subset_accuracies = [min(1.0, (total - left_out) / 3) for left_out in matches]
  return float(sum(subset_accuracies)) / len(subset_accuracies)


def _percent(accuracies: List[float]) -> float:
  """Mean in percent rounded to 2 decimals, computed as the official script does."""
  return round(100 * float(sum(accuracies)) / len(accuracies), 2)


class VQAAccumulator:
  """Collects per-question VQA accuracies and reports them like the official script.

  Usage:
    acc = VQAAccumulator()
    for qid, pred, answers, answer_type in ...:
      acc.add(qid, pred, answers, answer_type)
    acc.result()  # {"overall": 70.12, "per_answer_type": {"number": 50.3, ...}}
  """

  def __init__(self) -> None:
    self._accuracy: Dict[int, float] = {}
    self._answer_type: Dict[int, str] = {}

  def __len__(self) -> int:
    return len(self._accuracy)

  def add(self, question_id: int, prediction: str, gt_answers: Sequence[str],
          answer_type: str) -> float:
    """Scores one question and records it.

    Args:
      question_id: the question's id; each question may be added once.
      prediction: the predicted answer, raw.
      gt_answers: the question's human answers, as in the annotation file.
      answer_type: "yes/no", "number" or "other" in VQA v2 (any string is accepted).

    Returns:
      the question's accuracy in [0, 1] (`vqa_accuracy`).

    Raises:
      ValueError: if the question was already added.
    """
    question_id = int(question_id)
    if question_id in self._accuracy:
      raise ValueError(f"question {question_id} was already added to the VQA accumulator; "
                       "is the evaluation set iterated twice or padded with repeats?")
    accuracy = vqa_accuracy(prediction, gt_answers)
    self._accuracy[question_id] = accuracy
    self._answer_type[question_id] = answer_type
    return accuracy

  def result(self) -> Dict[str, Union[float, Dict[str, float]]]:
    """The official summary, in percent rounded to 2 decimals.

    Returns:
      {"overall": float, "per_answer_type": {answer type: float}}, the per-type entry holding
      the answer types that occurred, as the official script does.

    Raises:
      ValueError: if no question was added.
    """
    if not self._accuracy:
      raise ValueError("no question was added to the VQA accumulator; nothing to report.")
    by_type: Dict[str, List[float]] = collections.defaultdict(list)
    for question_id, accuracy in self._accuracy.items():
      by_type[self._answer_type[question_id]].append(accuracy)
    return {
        "overall": _percent(list(self._accuracy.values())),
        "per_answer_type": {t: _percent(by_type[t]) for t in sorted(by_type)},
    }


def write_predictions(path: str, predictions: Iterable[Tuple[int, str]]) -> None:
  """Writes a result file in the official format (e.g. for test-dev submission).

  The file holds ``[{"question_id": int, "answer": str}, ...]`` in the given order; missing
  parent directories are created.

  Args:
    path: the JSON file to write.
    predictions: (question_id, answer) pairs, one per question.

  Raises:
    ValueError: if a question id occurs twice.
  """
  records = []
  seen = set()
  for question_id, answer in predictions:
    question_id = int(question_id)
    if question_id in seen:
      raise ValueError(f"question {question_id} has two predictions; the VQA evaluation "
                       "server expects exactly one per question.")
    seen.add(question_id)
    records.append({"question_id": question_id, "answer": str(answer)})
  directory = os.path.dirname(path)
  if directory:
    os.makedirs(directory, exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    json.dump(records, f)
