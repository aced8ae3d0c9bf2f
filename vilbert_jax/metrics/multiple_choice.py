"""VCR multiple-choice accuracy: Q->A, QA->R and Q->AR.

Q->A picks one of 4 answers given the question; QA->R picks one of 4 rationales given the
question and the correct answer; Q->AR counts a question right only when both are right.
"""
from __future__ import annotations

from typing import Dict

import numpy as np


def multiple_choice_correct(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """Per question: is the highest-scoring option the labelled one?

  Args:
    logits: [N, num_options] option scores (logits or probabilities); among tied top scores
      the first option is taken.
    labels: [N] int index of the correct option.

  Returns:
    [N] bool.

  Raises:
    ValueError: on mismatched shapes or labels outside [0, num_options).
  """
  logits = np.asarray(logits)
  labels = np.asarray(labels)
  if logits.ndim != 2 or labels.shape != logits.shape[:1]:
    raise ValueError(f"logits must be [N, num_options] and labels [N], got shapes "
                     f"{logits.shape} and {labels.shape}.")
  if np.any((labels < 0) | (labels >= logits.shape[1])):
    raise ValueError(f"labels must lie in [0, {logits.shape[1]}).")
  return np.argmax(logits, axis=1) == labels


def vcr_accuracy(qa_logits: np.ndarray, qa_labels: np.ndarray, qar_logits: np.ndarray,
                 qar_labels: np.ndarray) -> Dict[str, float]:
  """The three VCR accuracies, as fractions in [0, 1].

  Row i of the two tasks must be the same question.

  Args:
    qa_logits: [N, 4] answer scores (Q->A).
    qa_labels: [N] correct answer.
    qar_logits: [N, 4] rationale scores given the correct answer (QA->R).
    qar_labels: [N] correct rationale.

  Returns:
    {"Q->A": ..., "QA->R": ..., "Q->AR": fraction with both right}.

  Raises:
    ValueError: if the two tasks hold different numbers of questions.
  """
  answer_right = multiple_choice_correct(qa_logits, qa_labels)
  rationale_right = multiple_choice_correct(qar_logits, qar_labels)
  if answer_right.shape != rationale_right.shape:
    raise ValueError(f"Q->A has {answer_right.shape[0]} questions but QA->R has "
                     f"{rationale_right.shape[0]}; Q->AR needs the same questions in the same "
                     "order.")
  return {
      "Q->A": float(np.mean(answer_right)),
      "QA->R": float(np.mean(rationale_right)),
      "Q->AR": float(np.mean(answer_right & rationale_right)),
  }
