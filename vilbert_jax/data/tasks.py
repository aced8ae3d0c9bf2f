"""Grain pipelines of the downstream tasks: VQA, VCR, RefCOCO+ and caption-based retrieval.

Each transform turns one task item of a built split into model inputs with the SPEC's lengths
(text `input_ids/token_type_ids/attention_mask [T]`, visual `image_feat [R,D]`,
`image_loc [R,5]`, `image_mask [R]`, IMG token at 0, R = 101 by default) plus the task's
targets, and `example_id` int32: the item's flat index among the split's items of the task
(stable across runs; evaluation keys predictions by it). Multiple-choice tasks (VCR, retrieval
training) put the options on a leading axis: text keys are `[4,T]` (`[8,T]` for VCR Q->AR);
batches add the batch axis in front.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Dict, List, NamedTuple, Optional, Tuple

import grain.python as grain
import numpy as np

from vilbert_jax import metrics
from vilbert_jax.data.pipeline import image_regions, make_loader, split_rng, text
from vilbert_jax.data.records import NUM_ANSWERS, NUM_OPTIONS
from vilbert_jax.data.regions import pad_rows, visual_inputs
from vilbert_jax.data.tfds_io import SplitData
from vilbert_jax.data.tokenizer import Tokenizer


def _image(record: Dict, num_visual_tokens: int) -> Dict[str, np.ndarray]:
  """Visual inputs of a record's regions in stored (proposal) order."""
  return visual_inputs(image_regions(record, num_visual_tokens - 1), num_visual_tokens)


def _stack(examples) -> Dict[str, np.ndarray]:
  return {k: np.stack([e[k] for e in examples]) for k in examples[0]}


@dataclasses.dataclass(frozen=True)
class VqaTransform(grain.MapTransform):
  """Question item -> inputs + `target [num_answers]` soft scores + `question_id` int64.

  Questions without answers (test-dev) get an all-zero target.
  """
  tokenizer: Tokenizer
  answer_vocab: Tuple[str, ...]
  max_text_len: int = 23
  num_visual_tokens: int = 101

  @functools.cached_property
  def answer_index(self) -> Dict[str, int]:
    return {a: i for i, a in enumerate(self.answer_vocab)}

  def map(self, element) -> Dict[str, np.ndarray]:
    _, item, record, index = element
    out = self.tokenizer.encode(text(record["vqa_question"][item]), self.max_text_len)
    out.update(_image(record, self.num_visual_tokens))
    answers = [text(a) for a in record["vqa_answers"][item * NUM_ANSWERS:
                                                     (item + 1) * NUM_ANSWERS]]
    out["target"] = np.zeros(len(self.answer_vocab), np.float32)
    for answer, score in metrics.soft_scores(answers).items():
      if answer in self.answer_index:
        out["target"][self.answer_index[answer]] = score
    ids = record.get("vqa_question_id")
    out["question_id"] = np.int64(ids[item] if ids is not None else index)
    out["example_id"] = np.int32(index)
    return out


@dataclasses.dataclass(frozen=True)
class ReferTransform(grain.MapTransform):
  """Referring expression -> inputs + per-region targets.

  Adds `target [R]` float32 (IoU with the ground-truth box, 0 below 0.5, 0 on padding; the IMG
  slot's box is the whole image; IoU as `vilbert_jax.metrics.box_iou`, inclusive pixels),
  `region_iou [R]` float32 (raw IoU, for accuracy), `region_boxes [R,4]` the candidates' boxes
  in pixels (0 on padding) and `gt_box [4]` pixels.
  """
  tokenizer: Tokenizer
  max_text_len: int = 20
  num_visual_tokens: int = 101

  def map(self, element) -> Dict[str, np.ndarray]:
    _, item, record, index = element
    out = self.tokenizer.encode(text(record["ref_expression"][item]), self.max_text_len)
    image = image_regions(record, self.num_visual_tokens - 1)
    out.update(visual_inputs(image, self.num_visual_tokens))
    gt = np.asarray(record["ref_box"][item], np.float32)
    whole = np.array([[0, 0, image.image_w, image.image_h]], np.float32)
    candidates = np.concatenate([whole, image.boxes])
    iou = metrics.box_iou(candidates, gt[None])[:, 0]
    out["region_boxes"] = pad_rows(candidates, self.num_visual_tokens)
    out["region_iou"] = pad_rows(iou.astype(np.float32), self.num_visual_tokens)
    out["target"] = metrics.grounding_targets(out["region_iou"])
    out["gt_box"] = gt
    out["example_id"] = np.int32(index)
    return out


VCR_MODES = ("q_a", "qa_r", "q_ar")


@dataclasses.dataclass(frozen=True)
class VcrTransform(grain.MapTransform):
  """Multiple-choice item -> text options + one image + labels.

  mode "q_a": segment A = question, segment B = answer option (Q->A); `[4,T]`, `label`.
  mode "qa_r": segment A = question + correct answer, segment B = rationale option (QA->R);
    `[4,T]`, `label`.
  mode "q_ar": both, answers first: `[8,T]`, `label` (answer) and `rationale_label`; what
    Q->AR (both right) needs.
  """
  tokenizer: Tokenizer
  mode: str = "q_a"
  max_text_len: int = 60
  num_visual_tokens: int = 101

  def __post_init__(self):
    if self.mode not in VCR_MODES:
      raise ValueError(f"VCR mode must be one of {VCR_MODES}, not {self.mode!r}")

  def map(self, element) -> Dict[str, np.ndarray]:
    _, item, record, index = element
    question = text(record["mc_question"][item])
    span = slice(item * NUM_OPTIONS, (item + 1) * NUM_OPTIONS)
    answers = [text(a) for a in record["mc_answers"][span]]
    answer_label = int(record["mc_answer_label"][item])
    groups = []  # (segment A, options, label)
    if self.mode in ("q_a", "q_ar"):
      groups.append((question, answers, answer_label))
    if self.mode in ("qa_r", "q_ar"):
      groups.append((f"{question} {answers[answer_label]}",
                     [text(r) for r in record["mc_rationales"][span]],
                     int(record["mc_rationale_label"][item])))
    out = _stack([self.tokenizer.encode(first, self.max_text_len, option)
                  for first, options, _ in groups for option in options])
    out.update(_image(record, self.num_visual_tokens))
    out["label"] = np.int32(groups[0][2])
    if self.mode == "q_ar":
      out["rationale_label"] = np.int32(groups[1][2])
    out["example_id"] = np.int32(index)
    return out


@dataclasses.dataclass(frozen=True)
class RetrievalTrainTransform(grain.RandomMapTransform):
  """Caption item -> 4 (image, caption) pairs, the true pair first (`label` = 0).

  Pairs: (image, caption), (image, random caption), (random image, caption),
  (image, caption of one of its hard-negative images). Every key gets the leading axis 4.
  """
  split: SplitData
  tokenizer: Tokenizer
  max_text_len: int = 30
  num_visual_tokens: int = 101

  def random_map(self, element, rng: np.random.Generator) -> Dict[str, np.ndarray]:
    record_index, item, record, index = element
    items = self.split.task_items("captions")
    rng_caption, rng_image, rng_hard = split_rng(rng, 3)
    records = self.split.records

    def caption_of(flat: int) -> str:
      return self.split.caption(*items.locate(flat))

    random_image = records[items.locate(items.other_record_item(rng_image, record_index))[0]]
    hard = np.asarray(record.get("hard_negatives", ()))
    if hard.size:
      hard_record = int(hard[rng_hard.integers(hard.size)])
      hard_caption = caption_of(int(items.starts[hard_record]
                                    + rng_hard.integers(items.counts[hard_record])))
    else:
      hard_caption = caption_of(items.other_record_item(rng_hard, record_index))
    caption = text(record["captions"][item])
    pairs = [(record, caption), (record, caption_of(items.other_record_item(rng_caption,
                                                                             record_index))),
             (random_image, caption), (record, hard_caption)]
    examples = []
    for image_record, pair_caption in pairs:
      example = self.tokenizer.encode(pair_caption, self.max_text_len)
      example.update(_image(image_record, self.num_visual_tokens))
      examples.append(example)
    out = _stack(examples)
    out["label"] = np.int32(0)
    out["example_id"] = np.int32(index)
    return out


def retrieval_eval_data(split: SplitData, tokenizer: Tokenizer, *, max_text_len: int = 30,
                        num_visual_tokens: int = 101, num_images: Optional[int] = None
                        ) -> Tuple[Dict[str, np.ndarray], Dict[str, np.ndarray]]:
  """Every caption and every image of (the first `num_images` records of) a split.

  Score all (caption, image) pairs and rank images per caption; the right image of caption c
  is `captions["image_index"][c]`.

  Returns:
    captions: `input_ids/token_type_ids/attention_mask [num_captions,T]`, `image_index
      [num_captions]` int32. images: `image_feat [num_images,R,D]`, `image_loc`, `image_mask`.
  """
  num_images = len(split) if num_images is None else min(num_images, len(split))
  captions, images, image_index = [], [], []
  for r in range(num_images):
    record = split.records[r]
    images.append(_image(record, num_visual_tokens))
    for caption in record["captions"]:
      captions.append(tokenizer.encode(text(caption), max_text_len))
      image_index.append(r)
  caption_arrays = _stack(captions)
  caption_arrays["image_index"] = np.asarray(image_index, np.int32)
  return caption_arrays, _stack(images)


# task_loader key -> the task whose items it reads (records.ITEM_FIELDS).
LOADER_ITEMS = {"vqa": "vqa", "refer": "refer", "vcr_q_a": "vcr", "vcr_qa_r": "vcr",
          "vcr_q_ar": "vcr", "retrieval": "captions"}
TASK_TEXT_LENGTHS = {"vqa": 23, "refer": 20, "vcr_q_a": 60, "vcr_qa_r": 60, "vcr_q_ar": 60,
                     "retrieval": 30}


class VqaGroundTruth(NamedTuple):
  """The human answers of one question, for the official accuracy."""

  question_id: int
  answers: List[str]  # The 10 (normalised) human answers; empty without annotations.
  answer_type: str  # "yes/no", "number", "other" ("" without annotations).


def vqa_ground_truth(split: SplitData) -> List[VqaGroundTruth]:
  """Every VQA question of `split`, in flat item order (index = `example_id`)."""
  if "vqa_answer_type" not in split.records[0]:
    raise ValueError(f"{split.name} has no vqa_answer_type field: it was built by an older "
                     "builder version; rebuild it to report per-answer-type accuracy")
  out = []
  for r in range(len(split)):
    record = split.records[r]
    answers = [text(a) for a in record["vqa_answers"]]
    for k, question_id in enumerate(record["vqa_question_id"]):
      out.append(VqaGroundTruth(int(question_id), answers[k * NUM_ANSWERS:(k + 1) * NUM_ANSWERS],
                                text(record["vqa_answer_type"][k])))
  return out


def task_loader(split: SplitData, task: str, tokenizer: Tokenizer, *, batch_size: int,
                seed: int, max_text_len: Optional[int] = None, num_visual_tokens: int = 101,
                answer_vocab: Optional[Tuple[str, ...]] = None,
                **loader_kwargs) -> grain.DataLoader:
  """A loader of one downstream task: "vqa", "refer", "vcr_q_a", "vcr_qa_r", "vcr_q_ar" or
  "retrieval".

  `max_text_len` defaults to the SPEC's length of the task (`TASK_TEXT_LENGTHS`);
  `answer_vocab` (VQA) overrides the split's metadata (e.g. a released head's answer order);
  `loader_kwargs` go to `pipeline.make_loader` (shuffle, num_epochs, shard, worker_count,
  read_threads, prefetch).
  """
  if task not in LOADER_ITEMS:
    raise ValueError(f"unknown task {task!r}; choose one of {', '.join(LOADER_ITEMS)}")
  kw = {"max_text_len": max_text_len or TASK_TEXT_LENGTHS[task],
        "num_visual_tokens": num_visual_tokens}
  if task == "vqa":
    vocab = answer_vocab or split.metadata.get("answer_vocab")
    if not vocab:
      raise ValueError(f"{split.name} has no answer_vocab metadata; pass answer_vocab")
    transform = VqaTransform(tokenizer, tuple(vocab), **kw)
  elif task == "refer":
    transform = ReferTransform(tokenizer, **kw)
  elif task.startswith("vcr"):
    transform = VcrTransform(tokenizer, task[len("vcr_"):], **kw)
  else:
    transform = RetrievalTrainTransform(split, tokenizer, **kw)
  return make_loader(split, LOADER_ITEMS[task], transform, batch_size=batch_size, seed=seed,
                     **loader_kwargs)
