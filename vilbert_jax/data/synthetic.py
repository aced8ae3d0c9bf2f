"""Deterministic synthetic scenes that imitate detector output, with a twin of every paper task.

A scene holds 2-5 objects, each of a class (`CLASSES`), a colour and a size at some position.
Each object gives one region (plus sometimes a jittered duplicate, like overlapping detector
proposals); background regions fill the scene up to `min_regions`. A region's feature is
`relu(class prototype + colour prototype + size prototype + noise)`: non-negative like pooled CNN
features, so the class and colour of an object are recoverable from its region. Its class
distribution is a softmax peaked at its class (background is class 0, as in Visual Genome's
1601-way output). Captions, VQA questions (10 human-like answers each), referring expressions
and 4-way multiple-choice items are generated from the scene, so words are predictable from
regions and relations from boxes.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Tuple

import numpy as np

from vilbert_jax.data.features import RegionFeatures
from vilbert_jax.data.records import NUM_ANSWERS, NUM_OPTIONS

CLASSES = ("cat", "dog", "car", "bus", "tree", "house", "ball", "cup", "chair", "table", "bird",
           "horse", "boat", "book", "lamp", "bike", "phone", "clock", "shoe", "hat")
PLURALS = tuple("buses" if c == "bus" else c + "s" for c in CLASSES)
COLORS = ("red", "blue", "green", "yellow", "black", "white", "orange", "purple")
SIZES = ("small", "large")
RELATIONS = ("to the left of", "to the right of", "above", "below")
NUMBERS = ("zero", "one", "two", "three", "four", "five")
FUNCTION_WORDS = ("a", "the", "there", "is", "are", "and", "what", "color", "how", "many",
                  "yes", "no", "?", ".")


def vocabulary() -> List[str]:
  """Every token of the grammar, after the BERT special tokens in BERT's relative order."""
  words = (list(CLASSES) + list(PLURALS) + list(COLORS) + list(SIZES) + list(NUMBERS)
           + [w for r in RELATIONS for w in r.split()] + list(FUNCTION_WORDS))
  return ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list(dict.fromkeys(words))


def answer_vocabulary() -> List[str]:
  """All VQA answers the grammar can produce."""
  return list(COLORS) + list(NUMBERS) + ["yes", "no"] + list(CLASSES)


@dataclasses.dataclass(frozen=True)
class SceneConfig:
  """Sizes of the synthetic scenes.

  Attributes:
    feature_dim: region feature width D.
    num_classes: object classes used (<= 20); the class distribution has num_classes + 1
      entries, background first.
    min_regions / max_regions: regions per image, background regions fill up to the minimum.
    noise: standard deviation of the feature noise, relative to prototype scale 1.
    seed: seed of the prototypes and of every scene.
  """
  feature_dim: int = 128
  num_classes: int = 20
  min_regions: int = 10
  max_regions: int = 36
  noise: float = 0.3
  seed: int = 0

  def __post_init__(self):
    if not 2 <= self.num_classes <= len(CLASSES):
      raise ValueError(f"num_classes={self.num_classes} must be in [2, {len(CLASSES)}]")
    if not 1 <= self.min_regions <= self.max_regions:
      raise ValueError(f"need 1 <= min_regions={self.min_regions} <= max_regions="
                       f"{self.max_regions}")


@dataclasses.dataclass(frozen=True)
class _Object:
  cls: int
  color: int
  size: int
  box: np.ndarray  # [4] pixels


def _prototypes(config: SceneConfig) -> Dict[str, np.ndarray]:
  """Sparse non-negative prototypes, fixed by the config's seed (shared by all splits)."""
  rng = np.random.default_rng([config.seed, 7919])
  def proto(n, scale):
    dense = np.abs(rng.normal(size=(n, config.feature_dim))) * scale
    return (dense * (rng.random((n, config.feature_dim)) < 0.35)).astype(np.float32)
  return {"class": proto(config.num_classes + 1, 2.0), "color": proto(len(COLORS), 1.5),
          "size": proto(len(SIZES), 1.0)}


def _relation(a: np.ndarray, b: np.ndarray) -> int:
  """Index into RELATIONS describing box `a` relative to box `b` (dominant axis of centres)."""
  dx = (a[0] + a[2] - b[0] - b[2]) / 2
  dy = (a[1] + a[3] - b[1] - b[3]) / 2
  if abs(dx) >= abs(dy):
    return 0 if dx < 0 else 1
  return 2 if dy < 0 else 3


class SceneGenerator:
  """Generates scene `i` of a split deterministically from (config.seed, split, i)."""

  def __init__(self, config: SceneConfig):
    self.config = config
    self._protos = _prototypes(config)

  def _objects(self, rng: np.random.Generator, w: int, h: int) -> List[_Object]:
    objects = []
    for _ in range(int(rng.integers(2, 6))):
      size = int(rng.integers(len(SIZES)))
      side = rng.uniform(0.12, 0.22) if size == 0 else rng.uniform(0.3, 0.45)
      bw, bh = side * w * rng.uniform(0.8, 1.2), side * h * rng.uniform(0.8, 1.2)
      x1, y1 = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
      objects.append(_Object(int(rng.integers(self.config.num_classes)) + 1,
                             int(rng.integers(len(COLORS))), size,
                             np.array([x1, y1, x1 + bw, y1 + bh], np.float32)))
    return objects

  def _region(self, rng, cls: int, color: int, size: int) -> Tuple[np.ndarray, np.ndarray]:
    """Feature [D] and class distribution [num_classes + 1] of one region."""
    feat = self._protos["class"][cls] + rng.normal(
        scale=self.config.noise, size=self.config.feature_dim)
    if color >= 0:
      feat = feat + self._protos["color"][color] + self._protos["size"][size]
    logits = rng.normal(size=self.config.num_classes + 1)
    logits[cls] += 4.0
    prob = np.exp(logits - logits.max())
    return np.maximum(feat, 0).astype(np.float32), (prob / prob.sum()).astype(np.float32)

  def scene(self, split: str, index: int) -> Tuple[RegionFeatures, Dict]:
    """One image: its regions, and the annotations of every task (dict of lists/arrays)."""
    rng = np.random.default_rng([self.config.seed, sum(split.encode()), len(split), index])
    w, h = int(rng.integers(480, 641)), int(rng.integers(360, 481))
    objects = self._objects(rng, w, h)
    feats, probs, boxes = [], [], []
    for obj in objects:
      copies = 2 if rng.random() < 0.4 else 1
      for _ in range(copies):
        jitter = rng.normal(scale=0.04, size=4) * np.tile(obj.box[2:] - obj.box[:2], 2)
        box = np.clip(obj.box + jitter, 0, [w, h, w, h]).astype(np.float32)
        f, p = self._region(rng, obj.cls, obj.color, obj.size)
        feats.append(f), probs.append(p), boxes.append(box)
    num_regions = int(rng.integers(self.config.min_regions,
                                   min(self.config.max_regions, self.config.min_regions + 10) + 1))
    while len(feats) < num_regions:
      bw, bh = rng.uniform(0.1, 0.6) * w, rng.uniform(0.1, 0.6) * h
      x1, y1 = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
      f, p = self._region(rng, 0, -1, 0)
      feats.append(f), probs.append(p), boxes.append(np.array([x1, y1, x1 + bw, y1 + bh],
                                                              np.float32))
    order = rng.permutation(len(feats))[:self.config.max_regions]
    image = RegionFeatures(f"{split}_{index}", np.stack(feats)[order], np.stack(boxes)[order],
                           w, h, np.stack(probs)[order])
    annotations = _captions(rng, objects)
    annotations.update(_vqa(rng, objects, self.config.num_classes))
    # Unique over the split (4 questions per scene), as VQA question ids are.
    annotations["vqa_question_id"] = (index * len(annotations["vqa_question"])
                                      + np.arange(len(annotations["vqa_question"]), dtype=np.int64))
    annotations.update(_referring(rng, objects))
    annotations.update(_multiple_choice(rng, objects, self.config.num_classes))
    return image, annotations


def _name(obj: _Object, with_size: bool = False) -> str:
  size = SIZES[obj.size] + " " if with_size else ""
  return f"{size}{COLORS[obj.color]} {CLASSES[obj.cls - 1]}"


def _pair(rng, objects: List[_Object]) -> Tuple[_Object, _Object]:
  i, j = rng.choice(len(objects), size=2, replace=False)
  return objects[i], objects[j]


def _captions(rng, objects: List[_Object], count: int = 5) -> Dict:
  """`count` captions, distinct where the scene allows (up to 50 tries)."""
  captions = []
  for _ in range(50):
    if len(captions) == count:
      break
    a, b = _pair(rng, objects)
    kind = int(rng.integers(3))
    if kind == 0:
      caption = f"a {_name(a, True)} is {RELATIONS[_relation(a.box, b.box)]} a {_name(b)} ."
    elif kind == 1:
      caption = f"there is a {_name(a)} and a {_name(b, True)} ."
    else:
      n = sum(o.cls == a.cls for o in objects)
      noun = PLURALS[a.cls - 1] if n > 1 else CLASSES[a.cls - 1]
      caption = f"{NUMBERS[n]} {noun} {RELATIONS[_relation(a.box, b.box)]} a {_name(b)} ."
    if caption not in captions:
      captions.append(caption)
  while len(captions) < count:
    captions.append(captions[len(captions) % len(captions)])
  return {"captions": captions}


def _noisy_answers(rng, answer: str, pool: List[str]) -> List[str]:
  """Ten human answers: mostly the right one, sometimes a plausible wrong one."""
  return [answer if rng.random() < 0.85 else str(rng.choice(pool)) for _ in range(NUM_ANSWERS)]


def _vqa(rng, objects: List[_Object], num_classes: int) -> Dict:
  questions, answers = [], []
  unique = [o for o in objects if sum(p.cls == o.cls for p in objects) == 1] or objects
  a = unique[int(rng.integers(len(unique)))]
  b = [o for o in objects if o is not a][int(rng.integers(len(objects) - 1))]
  questions.append(f"what color is the {CLASSES[a.cls - 1]} ?")
  answers += _noisy_answers(rng, COLORS[a.color], list(COLORS))
  cls = int(rng.integers(num_classes)) + 1
  n = sum(o.cls == cls for o in objects)
  questions.append(f"how many {PLURALS[cls - 1]} are there ?")
  answers += _noisy_answers(rng, NUMBERS[n], list(NUMBERS))
  questions.append(f"is there a {CLASSES[cls - 1]} ?")
  answers += _noisy_answers(rng, "yes" if n else "no", ["yes", "no"])
  questions.append(f"what is {RELATIONS[_relation(a.box, b.box)]} the {_name(b)} ?")
  answers += _noisy_answers(rng, CLASSES[a.cls - 1], list(CLASSES[:num_classes]))
  return {"vqa_question": questions, "vqa_answers": answers,
          "vqa_answer_type": ["other", "number", "yes/no", "other"]}


def _referring(rng, objects: List[_Object]) -> Dict:
  expressions, targets = [], []
  for _ in range(2):
    a, b = _pair(rng, objects)
    if rng.random() < 0.5:
      expressions.append(f"the {_name(a, True)}")
    else:
      expressions.append(f"the {_name(a)} {RELATIONS[_relation(a.box, b.box)]} the {_name(b)}")
    targets.append(a.box)
  return {"ref_expression": expressions, "ref_box": np.stack(targets).astype(np.float32)}


def _multiple_choice(rng, objects: List[_Object], num_classes: int) -> Dict:
  """VCR twin: Q->A over 4 answers, QA->R over 4 rationales."""
  a, b = _pair(rng, objects)
  rel = _relation(a.box, b.box)
  wrong_cls = [c for c in range(1, num_classes + 1) if c != a.cls]
  answers = [f"a {_name(a)}"] + [
      f"a {COLORS[int(rng.integers(len(COLORS)))]} {CLASSES[c - 1]}"
      for c in rng.choice(wrong_cls, size=NUM_OPTIONS - 1, replace=False)]
  rationales = [f"the {CLASSES[a.cls - 1]} is {RELATIONS[r]} the {CLASSES[b.cls - 1]}"
                for r in [rel] + [r for r in range(len(RELATIONS)) if r != rel]]
  answer_perm, rationale_perm = rng.permutation(NUM_OPTIONS), rng.permutation(NUM_OPTIONS)
  return {"mc_question": [f"what is {RELATIONS[rel]} the {_name(b)} ?"],
          "mc_answers": [answers[k] for k in answer_perm],
          "mc_answer_label": np.array([int(np.argmin(answer_perm))], np.int32),
          "mc_rationales": [rationales[k] for k in rationale_perm],
          "mc_rationale_label": np.array([int(np.argmin(rationale_perm))], np.int32)}
