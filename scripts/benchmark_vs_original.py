"""Our train step and the original PyTorch ViLBERT's, timed side by side in one process.

  python scripts/benchmark_vs_original.py --original_repo /tmp/vilbert-multi-task \
      --config configs/pretrain_cc.py --rounds 10

``--original_repo`` is a checkout of the original code (facebookresearch/vilbert-multi-task;
its ``vilbert/vilbert.py`` is imported from there), in a throwaway environment that has torch:
the original is never copied into this repository. Both sides get the same work: the model of
``--model_json`` (the original's JSON format; default the base model,
``bert_base_6layer_6conect.json``), batch ``--config.benchmark.batch_size`` (8), the config's
text length and visual tokens (36 / 37), random inputs with the paper's masking rates, dropout
on. ``--config.model.matmul_dtype=bfloat16`` times our bfloat16-input option instead.

Per round, one step of each side runs, alternating, so both see the same machine state, each
after ``--pause_s`` idle seconds:
- original ``fwd_bwd``: the three losses summed, backward;
- original ``step``: the same plus ``clip_grad_norm_(1.0)`` and ``torch.optim.AdamW``;
- ours: ``launch.py --config.mode=benchmark``'s step (forward, three losses, backward,
  global-norm clipping, AdamW), compiled once before the rounds.
Prints one JSON line: median wall seconds (``*_s``) and CPU seconds of the process, all
threads (``*_cpu_s``: meaningful on busy cores, where wall time is not) of each over the
rounds after ``--warmup`` rounds, and ``speedup`` = original step / ours in wall time (the
like-for-like ratio). torch uses ``--threads`` threads (default: every core, as XLA:CPU does).
"""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import pathlib
import statistics
import sys
import time

from absl import app, flags
import ml_collections
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vilbert_jax.config import ViLBERTConfig  # noqa: E402
from vilbert_jax.train import host_memory  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", "configs/pretrain_cc.py", "model + shapes")
_ORIGINAL = flags.DEFINE_string("original_repo", None, "checkout of the original ViLBERT code")
_ROUNDS = flags.DEFINE_integer("rounds", 10, "timed rounds (one step of each side per round)")
_WARMUP = flags.DEFINE_integer("warmup", 2, "untimed rounds first")
_THREADS = flags.DEFINE_integer("threads", os.cpu_count(), "torch intra-op threads")
_PAUSE = flags.DEFINE_float(
    "pause_s", 1.0, "idle seconds before each timed call, so that neither side starts while "
    "the other's threads still spin-wait for work (OpenMP's and Eigen's do, briefly)")
_KEEP_FREED = flags.DEFINE_bool(
    "keep_freed_host_memory", True,
    "glibc keeps freed memory for reuse (vilbert_jax/train/host_memory.py), for both sides: "
    "the process's allocator, as launch.py sets it with --config.keep_freed_host_memory=True")
_MODEL_JSON = flags.DEFINE_string(
    "model_json", "tests/fixtures/bert_base_6layer_6conect.json",
    "the architecture of both sides, in the original's JSON format")
# Fields of our config that the original JSON does not hold; they stay as --config sets them.
_IMPLEMENTATION_FIELDS = ("dtype", "param_dtype", "remat", "attention_impl", "matmul_dtype")


def _import_original(repo: str):
  """The original's ``vilbert.vilbert`` module, imported from ``repo`` as package ``vilbert``."""
  package = pathlib.Path(repo) / "vilbert"
  if not (package / "vilbert.py").is_file():
    raise FileNotFoundError(f"{package / 'vilbert.py'} not found: --original_repo must be a "
                            "checkout of the original ViLBERT code")
  for name, path in (("vilbert", package / "__init__.py"), ("vilbert.vilbert",
                                                             package / "vilbert.py")):
    spec = importlib.util.spec_from_file_location(
        name, path, submodule_search_locations=[str(package)] if name == "vilbert" else None)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
  return sys.modules["vilbert.vilbert"]


class OriginalStep:
  """One training step of the original model on fixed torch tensors."""

  def __init__(self, original, model_json: str, batch: dict, threads: int):
    import torch  # pylint: disable=g-import-not-at-top
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    self.torch = torch
    self.model = original.BertForMultiModalPreTraining(
        original.BertConfig.from_json_file(model_json))
    self.model.train()
    self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4, weight_decay=0.01)
    t = {k: torch.from_numpy(v) for k, v in batch.items()}
    self.inputs = dict(
        input_ids=t["input_ids"].long(), image_feat=t["image_feat"], image_loc=t["image_loc"],
        token_type_ids=t["token_type_ids"].long(), attention_mask=t["attention_mask"].long(),
        image_attention_mask=t["image_mask"].long(),
        masked_lm_labels=t["masked_lm_labels"].long(), image_label=t["image_label"].long(),
        image_target=t["image_target"], next_sentence_label=t["alignment_label"].long())

  def fwd_bwd(self) -> None:
    self.optimizer.zero_grad(set_to_none=True)
    sum(loss.sum() for loss in self.model(**self.inputs)).backward()

  def step(self) -> None:
    self.fwd_bwd()
    self.torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
    self.optimizer.step()


def _timed(fn) -> tuple[float, float]:
  """(wall seconds, CPU seconds of this process: all its threads) of one call of ``fn``."""
  wall, cpu = time.perf_counter(), time.process_time()
  fn()
  return time.perf_counter() - wall, time.process_time() - cpu


def main(argv):
  del argv
  if _KEEP_FREED.value:  # before either side starts threads
    host_memory.keep_freed_memory()
  # Imported here so that the flags above parse first (and jax picks up XLA_FLAGS).
  from vilbert_jax.train import benchmark  # pylint: disable=g-import-not-at-top
  config = _CONFIG.value
  arch = ViLBERTConfig.from_original_json(
      _MODEL_JSON.value, **{k: config.model[k] for k in _IMPLEMENTATION_FIELDS})
  config.model = ml_collections.ConfigDict(dataclasses.asdict(arch))
  ours = benchmark.TimedStep(config)
  batch = benchmark.synthetic_batch(ours.run.cfg, config.benchmark.batch_size, ours.text_len,
                                    ours.num_visual)
  original = OriginalStep(_import_original(_ORIGINAL.value), _MODEL_JSON.value, batch,
                          _THREADS.value)
  sides = {"original_fwd_bwd": original.fwd_bwd, "original_step": original.step,
           "ours_step": ours}
  times = {f"{side}_{kind}": [] for side in sides for kind in ("s", "cpu_s")}
  for i in range(_WARMUP.value + _ROUNDS.value):
    for side, fn in sides.items():
      time.sleep(_PAUSE.value)
      wall, cpu = _timed(fn)
      if i >= _WARMUP.value:
        times[f"{side}_s"].append(wall)
        times[f"{side}_cpu_s"].append(cpu)
  result = {k: statistics.median(v) for k, v in times.items()}
  result.update(speedup=result["original_step_s"] / result["ours_step_s"],
                speedup_cpu=result["original_step_cpu_s"] / result["ours_step_cpu_s"],
                batch_size=config.benchmark.batch_size, text_len=ours.text_len,
                num_visual_tokens=ours.num_visual, matmul_dtype=ours.run.cfg.matmul_dtype,
                rounds=_ROUNDS.value, torch_threads=_THREADS.value,
                host_memory_kept=host_memory.applied(),
                ours_compile_s=ours.compile_s)
  print(json.dumps(result))


if __name__ == "__main__":
  flags.mark_flags_as_required(["original_repo"])
  app.run(main)
