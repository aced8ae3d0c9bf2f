"""VQA: answer classification over the answer vocabulary, scored with the official accuracy.

Loss (SPEC 4): sigmoid cross-entropy of ``vqa_logits [B, A]`` against the soft scores
(min(1, 0.3 x matching human answers)), averaged over elements and multiplied by A. The
prediction is the argmax answer; accuracy is the official VQA metric over the 10 human
answers, overall and per answer type (percent). Splits without answers (test-dev) give only
the prediction file, in the official ``[{"question_id", "answer"}]`` format.
"""

from __future__ import annotations

import json
import pathlib

import jax
import jax.numpy as jnp
import optax

from vilbert_jax import metrics
from vilbert_jax.data.features.safe_pickle import safe_loads
from vilbert_jax.data.tasks import vqa_ground_truth
from vilbert_jax.tasks.base import Task


def vqa_loss(logits: jax.Array, target: jax.Array) -> jax.Array:
  """Mean sigmoid cross-entropy x number of answers; ``logits, target [B, A]``."""
  bce = optax.sigmoid_binary_cross_entropy(logits.astype(jnp.float32), target)
  return jnp.mean(bce) * logits.shape[-1]


def load_answer_vocab(path: str) -> list[str]:
  """Answers in head order from a JSON list or the original ``trainval_label2ans.pkl``
  (a pickled list of strings, read with the restricted unpickler)."""
  data = pathlib.Path(path).expanduser().read_bytes()
  vocab = json.loads(data) if path.endswith(".json") else safe_loads(data)
  if not isinstance(vocab, list) or not all(isinstance(a, str) for a in vocab):
    raise ValueError(f"{path} does not hold a list of answer strings")
  if len(set(vocab)) != len(vocab):
    raise ValueError(f"{path} repeats answers")
  return vocab


class VQA(Task):
  """VQA v2 (and its synthetic twin)."""

  name = "vqa"
  loader_task = "vqa"
  outputs = ("vqa_logits",)
  targets = ("target",)
  progress_metric = "soft_score"
  task_id = 1  # 12-in-1 "TASK1" (VQA v2)

  def __init__(self, config, metadata):
    super().__init__(config, metadata)
    path = config.task.answer_vocab_file
    if path:  # The run (export, predictions, targets) then uses the released head's order.
      self.metadata["answer_vocab"] = load_answer_vocab(path)
    self._truth = {}  # split name -> vqa_ground_truth: read once, not at every evaluation

  @property
  def answer_vocab(self) -> list[str]:
    vocab = self.metadata.get("answer_vocab")
    if not vocab:
      raise ValueError("the VQA dataset has no answer_vocab in its metadata; build it with "
                       "tfds_builders or give --config.task.answer_vocab_file")
    return list(vocab)

  @property
  def num_answers(self) -> int:
    return len(self.answer_vocab)

  def loader_options(self):
    return {"answer_vocab": tuple(self.answer_vocab)}

  def loss(self, out, batch):
    loss = vqa_loss(out.vqa_logits, batch["target"])
    best = jnp.argmax(out.vqa_logits, -1)
    # The original's training score: soft score of the predicted answer.
    score = jnp.take_along_axis(batch["target"], best[:, None], -1)[:, 0]
    return loss, {"loss/total": loss, "loss/vqa": loss, "soft_score": jnp.mean(score)}

  def predict(self, out, batch):
    del batch
    return {"answer": jnp.argmax(out.vqa_logits, -1)}

  def score(self, predictions, split):
    """Official accuracy of the questions with answers; records for every question."""
    if split.name not in self._truth:
      self._truth[split.name] = vqa_ground_truth(split)
    truth = self._truth[split.name]
    vocab = self.answer_vocab
    acc, records = metrics.VQAAccumulator(), []
    for example_id, answer in zip(predictions["example_id"], predictions["answer"]):
      gt = truth[int(example_id)]
      records.append({"question_id": gt.question_id, "answer": vocab[int(answer)]})
      if gt.answers:
        acc.add(gt.question_id, vocab[int(answer)], gt.answers, gt.answer_type)
    if not len(acc):
      return {}, records
    result = acc.result()
    out = {"accuracy": result["overall"]}
    out.update({f"accuracy_{t.replace('/', '_')}": v  # "yes/no" -> accuracy_yes_no
                for t, v in result["per_answer_type"].items()})
    return out, records


