"""Using a trained ViLBERT: answer a question, rank captions, ground a phrase.

    predictor = Predictor.load("/tmp/vqa_synthetic")  # a run's workdir or an export/ directory
    image = RegionFeatures(image_id, features [N, D], boxes [N, 4] px, image_w, image_h)
    predictor.answer("what color is the cat ?", image)            # [(answer, probability), ...]
    predictor.rank_captions(image, ["a red cat .", "a blue bus ."])  # [(caption, score), ...]
    predictor.ground("the red cat", image)                         # Grounding(box=..., ...)

Images are ``RegionFeatures`` or, with a detector (``Predictor.load(path,
detector=PARAMS_DIR)``), image files or BGR uint8 arrays: the detector extracts their regions
first, exactly as ``python -m vilbert_jax.detection.extract`` writes them to a feature store.
Every method takes ``attention=True`` to also return the attention probabilities of every
layer (``{module path: [heads, queries, keys]}``; with 12-in-1 task tokens the text has one
more position, the task token at 1). Inputs are prepared exactly as in training
(``data.regions.visual_inputs``: IMG token first, regions chosen by detector confidence when
there are more than fit), and each method compiles once per input shape.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from typing import Any, Callable, Optional, Sequence, Union

import flax
import jax
import numpy as np

from vilbert_jax.data.features import RegionFeatures
from vilbert_jax.data.pipeline import image_regions
from vilbert_jax.data.regions import visual_inputs
from vilbert_jax.data.tokenizer import Tokenizer, load_tokenizer, synthetic_tokenizer
from vilbert_jax.model.attention import ATTENTION_MAPS
from vilbert_jax.model.inputs import MODEL_INPUTS
from vilbert_jax.params_io import load_params
from vilbert_jax.train.export import TASK_FILE

# What the methods accept as an image: regions, an image file, or a BGR uint8 [H, W, 3] array.
ImageInput = Union[RegionFeatures, str, os.PathLike, np.ndarray]

@dataclasses.dataclass(frozen=True)
class Grounding:
  """Where a phrase is in the image."""

  box: tuple[float, float, float, float]  # x1, y1, x2, y2 in pixels of the chosen region.
  region: int  # Its visual token (0 = IMG, the whole image; i >= 1 = the i-th kept region).
  probability: float  # sigmoid of its score.
  scores: np.ndarray  # [R] scores (logits) of every visual token, -inf on padding.
  attention: Optional[dict] = None


def _attention_maps(state: Any) -> dict[str, np.ndarray]:
  """Flattens the ATTENTION_MAPS collection to ``{path: [heads, queries, keys]}`` (batch 0)."""
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(state[ATTENTION_MAPS]), sep="/")
  return {path: np.asarray(maps[0])[0] for path, maps in flat.items()}


def image_detector(params_dir: str, protocol: str = "bottom_up"
                   ) -> Callable[[np.ndarray], RegionFeatures]:
  """The detector saved in ``params_dir`` as a function of one BGR uint8 image (the first
  call compiles it for the image's size bucket)."""
  from vilbert_jax import detection  # pylint: disable=g-import-not-at-top
  params, cfg = detection.load_detector(params_dir)
  return lambda image: detection.extract(params, cfg, [image], protocol=protocol)[0]


def task_token_id(task: str) -> int:
  """The 12-in-1 task id of a registered task (``vilbert_jax.tasks.TASKS``)."""
  from vilbert_jax import tasks  # pylint: disable=g-import-not-at-top
  with_ids = sorted(name for name, t in tasks.TASKS.items() if t.task_id is not None)
  if task not in with_ids:
    raise ValueError(f"task {task!r} has no 12-in-1 task id; a model with task tokens needs one "
                     f"of {with_ids}")
  return tasks.TASKS[task].task_id


class Predictor:
  """A model and its params loaded once; answers requests one image at a time.

  A model with 12-in-1 task tokens reads every text with the token of ``task_id``.
  """

  def __init__(self, model: Any, params: Any, tokenizer: Tokenizer, *, task: str,
               answer_vocab: Optional[Sequence[str]], max_text_len: int,
               num_visual_tokens: int, task_id: Optional[int] = None,
               detector: Optional[Callable[[np.ndarray], RegionFeatures]] = None):
    """``task_id``: the 12-in-1 task token (models with task tokens; default the task's own);
    ``detector``: BGR uint8 ``[H, W, 3]`` image -> its regions, to take image files."""
    self.model, self.params, self.tokenizer = model, params, tokenizer
    self.detector = detector
    self.task, self.answer_vocab = task, list(answer_vocab or [])
    self.max_text_len, self.num_visual_tokens = max_text_len, num_visual_tokens
    self.task_id = None
    if model.cfg.task_specific_tokens:
      self.task_id = task_token_id(task) if task_id is None else int(task_id)
    self._apply = jax.jit(lambda params, inputs, kwargs: model.apply({"params": params}, *inputs,
                                                                     **kwargs))
    self._apply_with_maps = jax.jit(lambda params, inputs, kwargs: model.apply(
        {"params": params}, *inputs, **kwargs, mutable=[ATTENTION_MAPS]))

  @classmethod
  def load(cls, path: str, task: Optional[str] = None, detector: Optional[str] = None,
           protocol: str = "bottom_up") -> "Predictor":
    """From a finished run's workdir (its ``export/``) or an export directory.

    ``task``: a registered task name (e.g. "vqa", "retrieval", "refcoco_plus") to use instead of
    the run's own: it picks the task token of a model with task tokens (a multi-task model
    answers as that task) and, for ``rank_captions``, the retrieval head. ``detector``: a
    detector params directory (``python -m vilbert_jax.convert frcnn``), needed to take image
    files, read with region selection ``protocol``.
    """
    directory = pathlib.Path(path).expanduser()
    if not (directory / TASK_FILE).exists():
      directory = directory / "export"
    if not (directory / TASK_FILE).exists():
      raise FileNotFoundError(f"{path} has no {TASK_FILE}: give a finished run's workdir or its "
                              "export/ directory")
    params, spec = load_params(directory)
    meta = json.loads((directory / TASK_FILE).read_text())
    tok = (synthetic_tokenizer() if meta["tokenizer"] == "synthetic"
           else load_tokenizer(str(directory / meta["tokenizer"])))
    if detector is not None:
      detector = image_detector(detector, protocol)
    own_task = task in (None, meta["task"])
    return cls(spec.build(), params, tok, task=meta["task"] if own_task else task,
               answer_vocab=meta["answer_vocab"], max_text_len=meta["max_text_len"],
               num_visual_tokens=meta["num_visual_tokens"],
               task_id=meta.get("task_id") if own_task else None, detector=detector)

  def regions(self, image: ImageInput) -> RegionFeatures:
    """The regions the model reads for ``image``: itself if it is ``RegionFeatures``, else the
    detector's output for the image file (id: its name without suffix) or BGR uint8 array."""
    if isinstance(image, RegionFeatures):
      return image
    if self.detector is None:
      raise ValueError("this Predictor has no detector: load it with Predictor.load(path, "
                       "detector=PARAMS_DIR) to give image files or arrays, or pass "
                       "RegionFeatures")
    image_id = "image"
    if isinstance(image, (str, os.PathLike)):
      from vilbert_jax.detection.images import load_image  # pylint: disable=g-import-not-at-top
      image_id = pathlib.Path(image).stem
      image = load_image(os.fspath(image)).bgr
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
      raise ValueError(f"an image array must be BGR uint8 [height, width, 3], got "
                       f"{image.dtype} {image.shape}")
    record = self.detector(image)
    width = self.model.cfg.v_feature_size
    if record.features.shape[1] != width:
      raise ValueError(f"the detector gives {record.features.shape[1]}-wide region features, "
                       f"this model reads {width} (v_feature_size)")
    return dataclasses.replace(record, image_id=image_id)

  def _run(self, texts: Sequence[str], image: ImageInput, attention: bool):
    """The model on one image paired with each text; returns ``(output, image_mask [R],
    boxes [R-1 at most, 4] of the kept regions, attention maps or None)``."""
    image = self.regions(image)
    record = {"features": image.features, "boxes": image.boxes, "cls_prob": image.cls_prob,
              "image_w": image.image_w, "image_h": image.image_h}
    kept = image_regions(record, self.num_visual_tokens - 1)
    batch = {k: np.repeat(v[None], len(texts), axis=0)
             for k, v in visual_inputs(kept, self.num_visual_tokens).items()}
    text = [self.tokenizer.encode(t, self.max_text_len) for t in texts]
    batch.update({k: np.stack([t[k] for t in text]) for k in text[0]})
    inputs = tuple(batch[k] for k in MODEL_INPUTS)
    kwargs = {} if self.task_id is None else {
        "task_ids": np.full(len(texts), self.task_id, np.int32)}
    maps = None
    if attention:
      out, state = self._apply_with_maps(self.params, inputs, kwargs)
      maps = _attention_maps(state)
    else:
      out = self._apply(self.params, inputs, kwargs)
    return out, batch["image_mask"][0], kept.boxes, maps

  def answer(self, question: str, image: ImageInput, top_k: int = 5,
             attention: bool = False):
    """The ``top_k`` answers with their probabilities (sigmoid of the VQA logits, as the model
    was trained); with ``attention=True`` returns ``(answers, maps)``."""
    if not self.answer_vocab or getattr(self.model, "head_variant", None) is None:
      raise ValueError(f"this model ({self.task}) has no trained VQA head and vocabulary")
    out, _, _, maps = self._run([question], image, attention)
    probs = np.asarray(jax.nn.sigmoid(out.vqa_logits[0]))
    best = np.argsort(-probs, kind="stable")[:top_k]
    answers = [(self.answer_vocab[i], float(probs[i])) for i in best]
    return (answers, maps) if attention else answers

  def rank_captions(self, image: ImageInput, captions: Sequence[str],
                    attention: bool = False):
    """Captions sorted best first with their scores: the fine-tuned retrieval score for a
    retrieval model, else P(match) of the pretraining alignment head."""
    out, _, _, maps = self._run(list(captions), image, attention)
    if self.task == "retrieval":
      scores = np.asarray(out.retrieval_score)
    else:
      scores = np.asarray(jax.nn.softmax(out.alignment_logits, axis=-1)[:, 0])
    order = np.argsort(-scores, kind="stable")
    ranked = [(captions[i], float(scores[i])) for i in order]
    return (ranked, maps) if attention else ranked

  def ground(self, phrase: str, image: ImageInput, attention: bool = False) -> Grounding:
    """The region (IMG = whole image included) that the phrase refers to."""
    if getattr(self.model, "head_variant", None) is None:
      raise ValueError(f"this model ({self.task}) has no grounding head")
    image = self.regions(image)
    out, image_mask, kept, maps = self._run([phrase], image, attention)
    scores = np.where(image_mask > 0, np.asarray(out.grounding_logits[0]), -np.inf)
    region = int(np.argmax(scores))
    box = ((0.0, 0.0, float(image.image_w), float(image.image_h)) if region == 0
           else tuple(float(x) for x in kept[region - 1]))
    return Grounding(box, region, float(jax.nn.sigmoid(scores[region])), scores, maps)
