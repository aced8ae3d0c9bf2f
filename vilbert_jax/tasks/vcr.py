"""VCR: Q->A and QA->R as 4-way multiple choice, and Q->AR (both right).

Each item holds 8 (image, text) pairs: the question with each of the 4 answers, then the
question plus the correct answer with each of the 4 rationales (SPEC 4). ``retrieval_score``
(the original ``vil_logit``, ``Dense(d -> 1)`` on the pooled vector) scores each pair; a softmax
over each group of 4 gives the cross-entropy. The loss is the sum of the two (the original
trains the two as separate tasks of one model, with their own task ids 5 and 6).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from vilbert_jax import metrics
from vilbert_jax.metrics.multiple_choice import multiple_choice_correct
from vilbert_jax.tasks.base import Task, accuracy, softmax_cross_entropy


def answer_and_rationale_logits(score: jax.Array) -> tuple[jax.Array, jax.Array]:
  """``score [B*8]`` -> Q->A logits ``[B, 4]`` and QA->R logits ``[B, 4]``."""
  grouped = score.reshape(-1, 2, 4)
  return grouped[:, 0], grouped[:, 1]


class VCR(Task):
  """Visual Commonsense Reasoning (and its synthetic twin)."""

  name = "vcr"
  loader_task = "vcr_q_ar"
  outputs = ("retrieval_score",)
  targets = ("label", "rationale_label")
  progress_metric = "q_a_accuracy"
  # 12-in-1 trains Q->A and QA->R as two tasks, "TASK5" (VCR_Q-A) and "TASK6" (VCR_QA-R);
  # neither is among the 12 tasks of the released multi-task model.
  task_id = 5  # Q->A pairs (config.task.task_id overrides).
  rationale_task_id = 6  # QA->R pairs (config.task.rationale_task_id overrides).

  def task_ids(self, shape):
    """``[B, 8]``: the Q->A id on the 4 answer pairs, the QA->R id on the 4 rationale pairs."""
    rationale = self.task_token_row("rationale_task_id", self.rationale_task_id)
    per_option = jnp.array([self.configured_task_id] * 4 + [rationale] * 4, jnp.int32)
    return jnp.broadcast_to(per_option, shape)

  def loss(self, out, batch):
    qa, qar = answer_and_rationale_logits(out.retrieval_score)
    loss_qa = softmax_cross_entropy(qa, batch["label"])
    loss_qar = softmax_cross_entropy(qar, batch["rationale_label"])
    total = loss_qa + loss_qar
    return total, {"loss/total": total, "loss/q_a": loss_qa, "loss/qa_r": loss_qar,
                   "q_a_accuracy": accuracy(qa, batch["label"]),
                   "qa_r_accuracy": accuracy(qar, batch["rationale_label"])}

  def predict(self, out, batch):
    qa, qar = answer_and_rationale_logits(out.retrieval_score)
    return {"answer_logits": qa, "rationale_logits": qar, "label": batch["label"],
            "rationale_label": batch["rationale_label"]}

  def score(self, predictions, split):
    """The three official accuracies (fractions); per item the two softmax distributions."""
    del split
    p = predictions
    result = metrics.vcr_accuracy(p["answer_logits"], p["label"], p["rationale_logits"],
                                  p["rationale_label"])
    answer_right = multiple_choice_correct(p["answer_logits"], p["label"])
    records = [{"example_id": int(i), "answer_probs": _softmax(a).tolist(),
                "rationale_probs": _softmax(r).tolist(), "answer_correct": bool(c)}
               for i, a, r, c in zip(p["example_id"], p["answer_logits"], p["rationale_logits"],
                                     answer_right)]
    return {"q_a_accuracy": result["Q->A"], "qa_r_accuracy": result["QA->R"],
            "q_ar_accuracy": result["Q->AR"]}, records



def _softmax(logits: np.ndarray) -> np.ndarray:
  e = np.exp(logits - logits.max())
  return e / e.sum()
