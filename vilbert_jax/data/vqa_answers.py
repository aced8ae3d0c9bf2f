"""VQA v2 answer processing: the official normalisation, answer vocabulary, soft scores, accuracy.

The normalisation follows the official VQA evaluation: punctuation handling, number words to
digits, articles dropped, common contractions restored. Soft score of an answer =
min(1, 0.3 * number of the 10 human answers equal to it): 0, 0.3, 0.6, 0.9, 1.0.
"""
from __future__ import annotations

import collections
import re
from typing import Dict, Iterable, List, Sequence

import numpy as np

_CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've",
    "couldnt": "couldn't", "didnt": "didn't", "doesnt": "doesn't", "dont": "don't",
    "hadnt": "hadn't", "hasnt": "hasn't", "havent": "haven't", "hed": "he'd", "hes": "he's",
    "howd": "how'd", "howll": "how'll", "hows": "how's", "Im": "I'm", "Ive": "I've",
    "isnt": "isn't", "itd": "it'd", "itll": "it'll", "lets": "let's", "maam": "ma'am",
    "mightnt": "mightn't", "mightve": "might've", "mustnt": "mustn't", "mustve": "must've",
    "neednt": "needn't", "oclock": "o'clock", "shant": "shan't", "shed": "she'd",
    "shes": "she's", "shouldve": "should've", "shouldnt": "shouldn't", "thats": "that's",
    "thered": "there'd", "theres": "there's", "theyd": "they'd", "theyll": "they'll",
    "theyre": "they're", "theyve": "they've", "wasnt": "wasn't", "wed": "we'd",
    "weve": "we've", "werent": "weren't", "whatll": "what'll", "whatre": "what're",
    "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "wholl": "who'll",
    "whos": "who's", "whove": "who've", "whyll": "why'll", "whyre": "why're", "whys": "why's",
    "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't", "yall": "y'all",
    "youd": "you'd", "youll": "you'll", "youre": "you're", "youve": "you've",
}
_NUMBERS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
            "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_ARTICLES = {"a", "an", "the"}
_PUNCTUATION = [";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">",
                "<", "@", "`", ",", "?", "!"]
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
_COMMA_STRIP = re.compile(r"(\d)(,)(\d)")


def normalize_answer(answer: str) -> str:
  """The official VQA answer normalisation (e.g. "Two dogs!" -> "2 dogs")."""
  answer = answer.replace("\n", " ").replace("\t", " ").strip().lower()
  for p in _PUNCTUATION:
    if (p + " " in answer or " " + p in answer) or re.search(_COMMA_STRIP, answer):
      answer = answer.replace(p, "")
    else:
      answer = answer.replace(p, " ")
  answer = _PERIOD_STRIP.sub("", answer)
  words = []
  for word in answer.split():
    word = _NUMBERS.get(word, word)
    if word not in _ARTICLES:
      words.append(_CONTRACTIONS.get(word, word))
  return " ".join(words)


def answer_vocabulary(majority_answers: Iterable[str], min_count: int = 9) -> List[str]:
  """Normalised answers that are the majority answer of at least `min_count` questions.

  Args:
    majority_answers: per question, its majority answer (VQA's `multiple_choice_answer`).

  Returns:
    the answers, most frequent first (ties alphabetically); 3129 on VQA v2 train+val.
  """
  counts = collections.Counter(normalize_answer(a) for a in majority_answers)
  kept = [(a, n) for a, n in counts.items() if n >= min_count]
  return [a for a, _ in sorted(kept, key=lambda kv: (-kv[1], kv[0]))]


def soft_scores(answers: Sequence[str], vocab_index: Dict[str, int]) -> np.ndarray:
  """[len(vocab_index)] float32 soft target of one question from its human answers."""
  target = np.zeros(len(vocab_index), np.float32)
  for answer, count in collections.Counter(normalize_answer(a) for a in answers).items():
    if answer in vocab_index:
      target[vocab_index[answer]] = min(1.0, 0.3 * count)
  return target


def vqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
  """Official accuracy: mean over the 10 leave-one-out subsets of min(1, matches / 3)."""
  prediction = normalize_answer(prediction)
  gold = [normalize_answer(a) for a in answers]
  scores = [min(1.0, sum(g == prediction for j, g in enumerate(gold) if j != i) / 3)
            for i in range(len(gold))]
  return float(np.mean(scores)) if scores else 0.0
