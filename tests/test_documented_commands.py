"""Every shell command of README.md and vilbert_jax/data/README.md runs as written.

The commands are extracted from the ```bash blocks of both READMEs (continuation lines joined,
trailing comments dropped, `&&` chains split). Each must equal the `command` of exactly one
entry of `RUNNERS` (or be in `EXCLUDED`, with its reason, or in `RUN_ELSEWHERE`, naming the
test that runs it with the set-up it needs): a documented command without a runner fails
`test_every_documented_command_has_a_runner`, so a new command cannot go untested. A runner
writes the tiny inputs the command reads, in the real file formats; the command then runs with
the documented paths replaced by paths under the test's folder (`SUBSTITUTED`) and with only
the size flags of `APPENDED` added; the runner checks what it printed and wrote. Adding a
runner is one `Runner(...)` entry.

Commands run in this process through their entry points (`python -m M ARGS` -> `M.main(ARGS)`;
`python launch.py ARGS` -> absl flags parsed from ARGS, then `vilbert_jax.launch.main`), so the
imports and compiled programs are shared; anything else runs through bash. Each command runs
once per module (`Docs.run` remembers results), so later commands read what earlier ones wrote.
"""
from __future__ import annotations

import ast
import contextlib
import dataclasses
import importlib
import importlib.util
import io
import json
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys
from typing import Callable, Dict, List, Optional, Tuple

import jax
import numpy as np
import pytest

from data_fixtures import write_manual_dir

ROOT = pathlib.Path(__file__).parents[1]
DOCUMENTS = ("README.md", "vilbert_jax/data/README.md", "vilbert_jax/detection/README.md")

# Documented commands that are not run here, each with its reason.
EXCLUDED = {
    "pip install -r requirements.txt":
        "sets up the environment this test runs in (and would change the shared one)",
    "bash scripts/test.sh": "is CI itself, which runs this test",
    "python -m venv --system-site-packages .venv-beam":
        "sets up the Beam environment; scripts/test.sh (CI) runs exactly this before the Beam "
        "tests",
    "python scripts/benchmark_vs_original.py --original_repo /tmp/vilbert-multi-task":
        "needs the original PyTorch code (never copied here) and torch, in a throwaway "
        "environment",
    "python scripts/benchmark_vs_original.py --original_repo /tmp/vilbert-multi-task "
    "--config.model.matmul_dtype=bfloat16":
        "needs the original PyTorch code (never copied here) and torch, in a throwaway "
        "environment",
    "python scripts/benchmark_matmuls.py":
        "times torch's matmuls beside XLA's: needs torch, in the throwaway environment of the "
        "side-by-side benchmark",
    "python scripts/benchmark_retrieval.py --preset base --captions 16 --images 64":
        "the full-size model: minutes of compiling and ~100 s of scoring on 2 cores; the same "
        "script runs with --preset tiny here",
    "nice -n 10 python scripts/benchmark_detector.py --repeats 1":
        "the full-size detector: ~25 s of CPU per image; the detector itself is "
        "tests/test_detection.py's",
    "bash scripts/gpu_check.sh --detector": "needs a GPU (its --smoke mode is the CPU check)",
}

# Documented commands run as written by another test (it needs its own set-up: a fresh virtual
# environment, the Beam environment, the detector, a multi-task run): command -> that test.
_INSTALL_TEST = "tests/test_install.py::test_readme_install_section_runs_outside_the_checkout"
_EXTRACT_TEST = "tests/test_extract.py::test_from_image_files_to_vqa_answers"
_MULTITASK_TEST = ("tests/test_multitask.py::"
                   "test_launch_trains_multitask_then_fine_tunes_a_single_task")
RUN_ELSEWHERE = {
    "PYTHONPATH=. .venv-beam/bin/python scripts/benchmark_build.py --num_images 8000 "
    "--work_dir /tmp/bench8000": "tests/test_beam_build.py::test_documented_throughput_benchmark",
    'pip install ".[train]"': _INSTALL_TEST,
    "vilbert-convert original --checkpoint tests/fixtures/original_small.npz --config "
    "tests/fixtures/original_small_config.json --output /tmp/vilbert_small": _INSTALL_TEST,
    "python examples/custom_head.py --params /tmp/vilbert_small": _INSTALL_TEST,
    "vilbert-build vilbert_synthetic_scenes --data_dir /tmp/tfds --feature_dim 64": _INSTALL_TEST,
    "vilbert-launch --config configs/pretrain_synthetic.py --workdir /tmp/demo "
    "--config.data.data_dir=/tmp/tfds --config.num_train_steps=4 --config.data.worker_count=0 "
    "--config.eval.num_batches=1 --config.eval.retrieval_images=8": _INSTALL_TEST,
    "python -m vilbert_jax.convert original --checkpoint multi_task_model.bin --config "
    "bert_base_6layer_6conect.json --output /ckpt/12in1":
        "tests/test_task_tokens.py::test_readme_evaluates_the_multi_task_checkpoint_per_task",
    "python launch.py --config configs/refcoco_plus.py --workdir /tmp/12in1_refcoco_plus "
    "--config.mode=eval --config.init_checkpoint=/ckpt/12in1 --config.task.head_variant=12in1 "
    "--config.model.task_specific_tokens=True":
        "tests/test_task_tokens.py::test_readme_evaluates_the_multi_task_checkpoint_per_task",
    "python launch.py --config configs/multitask_synthetic.py --workdir /tmp/multitask "
    "--config.init_checkpoint=/tmp/vilbert_demo": _MULTITASK_TEST,
    "python launch.py --config configs/multitask_synthetic.py --workdir /tmp/vqa_from_multitask "
    "--config.init_checkpoint=/tmp/multitask --config.multitask.order='(\"vqa\",)'":
        _MULTITASK_TEST,
    "python -m vilbert_jax.convert frcnn --checkpoint pytorch_model.bin --config config.yaml "
    "--output /ckpt/frcnn_vg":
        "tests/test_detection.py::test_convert_cli_writes_a_detector_directory",
    "python -m vilbert_jax.detection.extract --images /data/coco/train2014 --detector "
    "/ckpt/frcnn_vg --output /data/vqa/features_trainval.tsv --image_ids digits": _EXTRACT_TEST,
    "python -m tfds_builders.build vilbert_vqa2 --manual_dir /data/vqa --data_dir /data/tfds "
    "--feature_dim 2048": _EXTRACT_TEST,
    "python -m tfds_builders.build vilbert_conceptual_captions --manual_dir /data/cc --data_dir "
    "/data/tfds --float16 --beam_runner local --beam_workers 2":
        "tests/test_beam_build.py::test_documented_command_two_worker_processes",
}

# Documented path -> path under the test's folder. The three TFDS data dirs are one folder, so
# a dataset built by one documented command is read by the others.
SUBSTITUTED = {
    "~/tensorflow_datasets": "data/tfds", "~/tfds": "data/tfds", "/data/": "data/",
    "/ckpt/": "ckpt/", "/bert/": "bert/", "/tmp/": "tmp/",
    "pytorch_model_9.bin": "released/pytorch_model_9.bin",
    "bert_base_6layer_6conect.json": "released/bert_base_6layer_6conect.json",
    "bert-base-uncased/": "bert-base-uncased/",
}

# The model sizes every training command is shrunk to (the written model's other fields stay).
_TINY_MODEL = (
    "--config.model.hidden_size=32", "--config.model.num_attention_heads=2",
    "--config.model.intermediate_size=48", "--config.model.num_hidden_layers=1",
    "--config.model.v_hidden_size=24", "--config.model.v_num_attention_heads=2",
    "--config.model.v_intermediate_size=40", "--config.model.v_num_hidden_layers=1",
    "--config.model.bi_hidden_size=16", "--config.model.bi_num_attention_heads=2",
    "--config.model.v_biattention_id=(0,)", "--config.model.t_biattention_id=(0,)")
_SYNTHETIC_SIZES = ("--config.data.synthetic.num_train=64",
                    "--config.data.synthetic.num_validation=16",
                    "--config.data.synthetic.num_test=16", "--config.data.worker_count=0")
_SHORT_RUN = ("--config.batch_size=16", "--config.num_train_steps=2",
              "--config.log_every_steps=1", "--config.eval.batch_size=16",
              "--config.eval.num_batches=1", "--config.eval.retrieval_images=8")

DEMO = "python launch.py --config configs/pretrain_synthetic.py --workdir /tmp/vilbert_demo"
PRETRAIN_CC = ("python launch.py --config configs/pretrain_cc.py --workdir /ckpt/cc "
               "--config.data.data_dir=/data/tfds --config.data.tokenizer=/bert/vocab.txt "
               "--config.init.bert_checkpoint=/bert/model.safetensors")
BUILD_CC = ("python -m tfds_builders.build vilbert_conceptual_captions --manual_dir /data/cc "
            "--data_dir /data/tfds")
BUILD_TEMPLATE = ("python -m tfds_builders.build NAME --manual_dir DIR --data_dir "
                  "~/tensorflow_datasets [--feature_dim 2048] [--float16] [--skip_bad_rows] "
                  "[--num_workers 8] [--config NAME]")
VQA_FINETUNE = ("python launch.py --config configs/vqa.py --workdir /ckpt/vqa "
                "--config.init_checkpoint=/ckpt/cc --config.data.data_dir=/data/tfds "
                "--config.data.tokenizer=/bert/vocab.txt")

BENCH_DATA = "python scripts/benchmark_data.py --workers 0,1,2,3 --num_batches 100"
BENCH_DATA_FLOAT16 = "python scripts/benchmark_data.py --workers 0,2 --float16 --num_batches 100"
_BENCH_DATA_SIZES = ("--num_images=32", "--build_workers=0", "--batch_size=4")

# The size-only flags appended to commands that would be too slow at full size: the written
# module and flags all stay; these only shrink the model, the data and the number of steps.
APPENDED: Dict[str, Tuple[str, ...]] = {
    DEMO: _TINY_MODEL + _SYNTHETIC_SIZES + _SHORT_RUN,
    DEMO + " --config.mode=eval": _TINY_MODEL + _SYNTHETIC_SIZES + _SHORT_RUN,
    "python launch.py --config configs/vqa_synthetic.py --workdir /tmp/vqa_synthetic "
    "--config.init_checkpoint=/tmp/vilbert_demo": _TINY_MODEL + _SYNTHETIC_SIZES + _SHORT_RUN,
    PRETRAIN_CC: _TINY_MODEL + ("--config.batch_size=8", "--config.num_train_steps=2",
                                "--config.log_every_steps=1", "--config.eval.num_batches=1",
                                "--config.eval.retrieval_images=2"),
    "python launch.py --config configs/pretrain_cc.py --config.mode=benchmark":
        _TINY_MODEL + ("--config.benchmark.steps=1", "--config.benchmark.warmup_steps=1"),
    VQA_FINETUNE: _TINY_MODEL + ("--config.batch_size=8", "--config.num_train_steps=2",
                                 "--config.log_every_steps=1", "--config.eval.batch_size=8"),
    "python launch.py --config configs/vqa.py --workdir /ckpt/vqa --config.mode=eval "
    "--config.data.eval_splits='(\"minval\",\"test_dev\")' --config.data.data_dir=/data/tfds "
    "--config.data.tokenizer=/bert/vocab.txt": _TINY_MODEL + ("--config.eval.batch_size=8",),
    "python launch.py --config configs/zeroshot_flickr30k.py --workdir /tmp/zs "
    "--config.init_checkpoint=/ckpt/cc --config.data.data_dir=/data/tfds "
    "--config.data.tokenizer=/bert/vocab.txt": _TINY_MODEL + ("--config.eval.batch_size=8",),
    BENCH_DATA: _BENCH_DATA_SIZES,
    BENCH_DATA_FLOAT16: _BENCH_DATA_SIZES,
}


# ---------------------------------------------------------------------------------------------
# Extraction


def _join_lines(block: str) -> List[str]:
  """The commands of one ```bash block: continuations joined, comments dropped, && split."""
  commands, pending = [], ""
  for line in block.splitlines():
    line = _strip_comment(line).rstrip()
    if line.endswith("\\"):
      pending += line[:-1].strip() + " "
      continue
    line = (pending + line.strip()).strip()
    pending = ""
    if line:
      commands += [part.strip() for part in line.split(" && ")]
  assert not pending, f"a continuation line ends the block: {pending!r}"
  return commands


def _strip_comment(line: str) -> str:
  """`line` without a `# ...` comment that starts outside quotes (after a space or at 0)."""
  quote = None
  for i, ch in enumerate(line):
    if quote:
      quote = None if ch == quote else quote
    elif ch in "'\"":
      quote = ch
    elif ch == "#" and (i == 0 or line[i - 1].isspace()):
      return line[:i]
  return line


# An inline code span is a command when it starts like one and passes a flag.
_INLINE_COMMAND = re.compile(r"(python|bash|nice|PYTHONPATH=|XLA_FLAGS=)\S*\s.*\s--")


def documented_commands() -> Dict[str, List[str]]:
  """Command -> where it is documented ("README.md:15"): every command of every ```bash block,
  and every inline code span (outside fenced blocks) that is a whole command with flags."""
  found: Dict[str, List[str]] = {}
  for doc in DOCUMENTS:
    text = (ROOT / doc).read_text()
    for match in re.finditer(r"^```bash\n(.*?)^```", text, re.S | re.M):
      line = text[:match.start()].count("\n") + 1
      for command in _join_lines(match.group(1)):
        found.setdefault(command, []).append(f"{doc}:{line}")
    prose = re.sub(r"^```.*?^```", lambda m: "\n" * m.group(0).count("\n"), text,
                   flags=re.S | re.M)
    for match in re.finditer(r"`([^`]+)`", prose):
      command = " ".join(match.group(1).split())
      if _INLINE_COMMAND.match(command):
        line = prose[:match.start()].count("\n") + 1
        found.setdefault(command, []).append(f"{doc}:{line}")
  return found


def test_inline_commands_are_found_and_mentions_are_not():
  assert _INLINE_COMMAND.match("python scripts/x.py --n 1")
  assert _INLINE_COMMAND.match("XLA_FLAGS=--a=8 python launch.py --config c.py")
  assert not _INLINE_COMMAND.match("python launch.py")
  assert not _INLINE_COMMAND.match("--config.mode=eval")


def test_extraction_joins_continuations_and_drops_comments():
  block = ("# a comment line\n"
           "python a.py --x 1 \\\n    --y '#not a comment'   # trailing\n"
           "pip install -r r.txt && python b.py\n")
  assert _join_lines(block) == ["python a.py --x 1 --y '#not a comment'",
                                "pip install -r r.txt", "python b.py"]


# ---------------------------------------------------------------------------------------------
# Running


@dataclasses.dataclass(frozen=True)
class Run:
  """One executed command: exit status and what it printed on stdout."""
  command: str
  rc: int
  out: str


class Docs:
  """The test's folder, the documented paths mapped into it, and the commands run so far."""

  def __init__(self, root: pathlib.Path):
    self.root = root
    self._runs: Dict[str, Run] = {}
    self._prepared: set = set()

  def path(self, documented: str) -> pathlib.Path:
    """Where documented path `documented` (e.g. "/data/cc") lives in this test."""
    return pathlib.Path(substitute(documented, self.root))

  def run(self, command: str) -> Run:
    """Runs `command` once per module: a RUNNERS command, one of a runner's expansions, or a
    builder name (the builder template's plain build of it)."""
    command = BUILD_ALIASES.get(command, command)
    if command not in self._runs:
      runner = runner_of(command)
      for earlier in runner.after:
        assert self.run(earlier).rc == 0, f"{earlier} failed:\n{self.run(earlier).out}"
      if runner.inputs not in self._prepared:
        self._prepared.add(runner.inputs)
        runner.inputs(self)
      concrete = substitute(command, self.root) + "".join(
          f" {flag}" for flag in APPENDED.get(runner.command, ()))
      self._runs[command] = execute(concrete)
    return self._runs[command]


def substitute(command: str, root: pathlib.Path) -> str:
  """`command` with each documented path of SUBSTITUTED moved under `root`."""
  pattern = "|".join(re.escape(p) for p in sorted(SUBSTITUTED, key=len, reverse=True))
  return re.sub(rf"(?<=[\s=])({pattern})",
                lambda m: f"{root}/{SUBSTITUTED[m.group(1)]}", " " + command)[1:]


def execute(command: str) -> Run:
  """Runs one shell command from the repository root (in-process where it is Python)."""
  args = shlex.split(command)
  printed = io.StringIO()
  with contextlib.redirect_stdout(printed), _cwd(ROOT):
    try:
      if args[:2] == ["python", "-m"]:
        rc = _module_main(args[2])(args[3:])
      elif args[:2] == ["python", "launch.py"]:
        rc = _launch(args[1:])
      else:
        done = subprocess.run(["bash", "-c", command], capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
        print(done.stdout + done.stderr)
        rc = done.returncode
    except SystemExit as e:
      rc = e.code if isinstance(e.code, int) else 1
      print(e.code)
    except Exception as e:  # pylint: disable=broad-except
      rc = 1
      print(f"{type(e).__name__}: {e}")
  return Run(command, rc or 0, printed.getvalue())


@contextlib.contextmanager
def _cwd(path):
  before = os.getcwd()
  os.chdir(path)
  try:
    yield
  finally:
    os.chdir(before)


def _module_main(name: str):
  module = importlib.import_module(name)
  if not hasattr(module, "main"):
    module = importlib.import_module(name + ".__main__")
  return module.main


def _launch(argv: List[str]) -> int:
  """`python launch.py ARGS` in this process: absl flags from ARGS, then `launch.main`."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  launch = importlib.import_module("vilbert_jax.launch")  # what launch.py runs
  saved, was_parsed = sys.argv, flags.FLAGS.is_parsed()
  sys.argv = argv  # config_flags finds the --config.* overrides in sys.argv
  try:
    flags.FLAGS.unparse_flags()
    for name in [n for n in flags.FLAGS if n.startswith("config.")]:  # the last run's
      delattr(flags.FLAGS, name)  # overrides, defined again by this parse
    flags.FLAGS(argv)
    launch.main([])
  finally:
    sys.argv = saved
    flags.FLAGS.unparse_flags()
    if was_parsed:  # as other tests left them (grain's workers need parsed flags)
      flags.FLAGS.mark_as_parsed()
  return 0


# ---------------------------------------------------------------------------------------------
# Inputs in the real formats


def _tiny_vilbert_config():
  """The base model at the sizes of _TINY_MODEL (what the shrunk paper commands train)."""
  import vilbert_jax as vj  # pylint: disable=g-import-not-at-top
  sizes = {}
  for flag in _TINY_MODEL:
    key, value = flag[len("--config.model."):].split("=")
    sizes[key] = eval(value)  # pylint: disable=eval-used
  return vj.preset("base", **sizes)


def _original_state_dict(cfg) -> Dict[str, np.ndarray]:
  """A ViLBERT of `cfg` with random weights, under the original PyTorch keys."""
  import vilbert_jax as vj  # pylint: disable=g-import-not-at-top
  model = vj.ViLBERTForPretraining(cfg)
  ids = np.zeros((1, 2), np.int32)
  shapes = jax.eval_shape(model.init, jax.random.key(0), ids, None, None,
                          np.zeros((1, 2, cfg.v_feature_size), np.float32),
                          np.zeros((1, 2, 5), np.float32))["params"]
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda s: (0.02 * rng.standard_normal(s.shape)).astype(np.float32),
                        shapes)
  return vj.convert.flax_to_original(params, cfg)


def write_bert(docs: Docs) -> None:
  """/bert/vocab.txt (WordPiece) and /bert/model.safetensors (HF BERT keys) for the tiny
  model; the same checkpoint as bert-base-uncased/model.safetensors, and the tiny model's
  original JSON config as bert_base_6layer_6conect.json."""
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  cfg = _tiny_vilbert_config()
  bert = {k: v for k, v in _original_state_dict(cfg).items()
          if re.match(r"bert\.(embeddings|encoder\.layer)\.", k)}
  for folder in ("/bert/", "bert-base-uncased/"):
    docs.path(folder).mkdir(parents=True, exist_ok=True)
    save_file(bert, docs.path(folder) / "model.safetensors")
  shutil.copy(ROOT / "vilbert_jax/data/synthetic_vocab.txt", docs.path("/bert/vocab.txt"))
  json_path = docs.path("bert_base_6layer_6conect.json")
  json_path.parent.mkdir(parents=True, exist_ok=True)
  json_path.write_text(json.dumps(cfg.to_original_json()))


def write_released(docs: Docs) -> None:
  """pytorch_model_9.bin (torch.save of the original keys) where torch is installed."""
  write_bert(docs)
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:  # The command must then stop with the error naming PyTorch, before
    docs.path("pytorch_model_9.bin").write_bytes(b"")  # it reads the file.
    return
  state = _original_state_dict(_tiny_vilbert_config())
  torch.save({k: torch.from_numpy(v) for k, v in state.items()},
             docs.path("pytorch_model_9.bin"))


def write_cc(docs: Docs) -> None:
  write_manual_dir("vilbert_conceptual_captions", docs.path("/data/cc"))


def _nothing(docs: Docs) -> None:
  del docs


# ---------------------------------------------------------------------------------------------
# The builder template of vilbert_jax/data/README.md, for every builder


# builder -> split sizes (records) its write_manual_dir inputs give
BUILT_SPLITS = {
    "vilbert_synthetic_scenes": {"train": 5000, "validation": 500, "test": 500},
    "vilbert_conceptual_captions": {"train": 8, "validation": 8},
    "vilbert_vqa2": {"trainval": 6, "minval": 4, "test_dev": 1},
    "vilbert_flickr30k": {"train": 4, "validation": 1, "test": 1},
    "vilbert_refcoco_plus": {"train": 1, "validation": 1, "testA": 1},
    "vilbert_vcr": {"train": 1, "validation": 1, "test": 1},
}


def template_builds(template: str) -> List[str]:
  """The template for each builder: once without the optional flags, and (the region
  builders) once with all of them, `--config NAME` being `--config default`.

  Two flags are left out where they would only cost time: the synthetic scenes' flags change
  the size of the generated data (2048-d features for 6,000 scenes), not how inputs are read,
  so they run without optional flags; and `--num_workers 8` (8 decoding processes, ~6 s of CPU
  to start) runs with vilbert_conceptual_captions only, the decoding in workers being the
  same code for every builder (`store_reader.images`).
  """
  out = []
  for name in BUILT_SPLITS:
    manual = f"/data/manual/{name}"
    plain = re.sub(r" \[[^]]*\]", "", template)
    out.append(plain.replace("NAME", name).replace("DIR", manual))
    if name != "vilbert_synthetic_scenes":
      full = re.sub(r"\[([^]]*)\]", r"\1", template).replace("--config NAME", "--config default")
      if name != "vilbert_conceptual_captions":
        full = full.replace(" --num_workers 8", "")
      out.append(full.replace("NAME", name).replace("DIR", manual))
  return out


def write_manual_dirs(docs: Docs) -> None:
  for name in BUILT_SPLITS:
    manual = docs.path(f"/data/manual/{name}")
    if name == "vilbert_synthetic_scenes":
      manual.mkdir(parents=True, exist_ok=True)  # generated: the folder stays empty
    else:
      write_manual_dir(name, manual)


def _check_build(run: Run, name: str) -> None:
  assert run.rc == 0, run.out
  for split, n in BUILT_SPLITS[name].items():
    assert f"  {split}: {n} records" in run.out, (split, run.out)


def check_template_build(docs: Docs, run: Run) -> None:
  del docs
  _check_build(run, run.command.split()[3])
  if "--float16" in run.command:
    assert "/default-float16True/" in run.out, run.out


# ---------------------------------------------------------------------------------------------
# Checks


def _metrics(workdir: pathlib.Path, split: str) -> List[dict]:
  lines = (workdir / "metrics.jsonl").read_text().splitlines()
  return [m for m in map(json.loads, lines) if m["split"] == split]


def _eval_metrics(workdir: pathlib.Path) -> dict:
  return json.loads((workdir / "eval_metrics.json").read_text())


def check_demo(docs: Docs, run: Run) -> None:
  assert run.rc == 0, run.out
  workdir = docs.path("/tmp/vilbert_demo")
  assert [m["step"] for m in _metrics(workdir, "train")] == [1, 2]
  assert "zero_shot/R@1" in _metrics(workdir, "eval")[-1]
  assert (workdir / "checkpoints" / "2").is_dir() and (workdir / "export").is_dir()
  assert f"checkpoints: {workdir}/checkpoints" in run.out


def check_demo_eval(docs: Docs, run: Run) -> None:
  assert run.rc == 0, run.out
  workdir = docs.path("/tmp/vilbert_demo")
  trained, evaluated = _metrics(workdir, "eval")  # the demo's final evaluation, then this one
  for key in ("loss/total", "masked_lm_accuracy", "zero_shot/R@1"):  # same step, same numbers
    assert evaluated[key] == pytest.approx(trained[key], rel=1e-5), key
  assert "masked_lm_accuracy" in _eval_metrics(workdir)


def check_vqa_synthetic(docs: Docs, run: Run) -> None:
  assert run.rc == 0, run.out
  workdir = docs.path("/tmp/vqa_synthetic")
  assert "loaded" in run.out  # the demo's parameters
  assert 0 <= _eval_metrics(workdir)["validation/accuracy"] <= 100
  assert (workdir / "vqa_validation_predictions.json").exists()


def check_convert_original(docs: Docs, run: Run) -> None:
  if importlib.util.find_spec("torch") is None:
    assert run.rc != 0 and "needs PyTorch" in run.out, run.out
    return
  assert run.rc == 0, run.out
  assert (docs.path("/ckpt/vilbert_base") / "model.json").exists()


def check_convert_hf_bert(docs: Docs, run: Run) -> None:
  assert run.rc == 0, run.out
  assert f"loaded {_bert_tensors(docs)} tensors" in run.out, run.out  # all of BERT's
  assert (docs.path("/ckpt/vilbert_from_bert") / "model.json").exists()


def _bert_tensors(docs: Docs) -> int:
  from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
  return len(load_file(docs.path("/bert/model.safetensors")))


def check_build_cc(docs: Docs, run: Run) -> None:
  del docs
  _check_build(run, "vilbert_conceptual_captions")


def check_store(expected: int) -> Callable[[Docs, Run], None]:
  def check(docs: Docs, run: Run) -> None:
    del docs
    assert run.rc == 0, run.out
    assert f"{expected} records checked, 0 bad" in run.out, run.out
    assert "feature widths [2048]; with cls_prob: %d" % expected in run.out, run.out
  return check


def check_pretrain_cc(docs: Docs, run: Run) -> None:
  assert run.rc == 0, run.out
  workdir = docs.path("/ckpt/cc")
  assert f"loaded {_bert_tensors(docs)} tensors" in run.out, run.out  # all of BERT's
  assert [m["step"] for m in _metrics(workdir, "train")] == [1, 2]
  assert (workdir / "export").is_dir()


def check_benchmark(docs: Docs, run: Run) -> None:
  del docs
  assert run.rc == 0, run.out
  line = json.loads(next(l for l in run.out.splitlines() if l.startswith("{")))
  assert line["step_time_s"] > 0 and line["batch_size"] == 8


def check_vqa(docs: Docs, run: Run) -> None:
  assert run.rc == 0, run.out
  workdir = docs.path("/ckpt/vqa")
  metrics = _eval_metrics(workdir)
  assert 0 <= metrics["minval/accuracy"] <= 100 and "minval/accuracy_yes_no" in metrics, metrics
  predictions = json.loads((workdir / "vqa_minval_predictions.json").read_text())
  assert len(predictions) == 12  # every minval question once


def check_vqa_eval(docs: Docs, run: Run) -> None:
  check_vqa(docs, run)
  test_dev = json.loads((docs.path("/ckpt/vqa") / "vqa_test_dev_predictions.json").read_text())
  assert [p["question_id"] for p in test_dev] == [1000]


def check_zeroshot(docs: Docs, run: Run) -> None:
  assert run.rc == 0, run.out
  metrics = {k.split("/")[-1]: v for k, v in _eval_metrics(docs.path("/tmp/zs")).items()}
  assert 0 <= metrics["R@1"] <= metrics["R@5"] <= 100, metrics


def check_benchmark_data(docs: Docs, run: Run) -> None:
  del docs
  assert run.rc == 0, run.out
  assert "build from TSV, 0 decoding workers:" in run.out, run.out
  workers = re.search(r"--workers (\S+)", run.command).group(1).split(",")
  rates = re.findall(r"pretraining batches, (\d+) workers: (\d+) examples/s", run.out)
  assert [w for w, _ in rates] == workers and all(int(r) > 0 for _, r in rates), run.out


def check_benchmark_retrieval(docs: Docs, run: Run) -> None:
  del docs
  assert run.rc == 0, run.out
  line = json.loads(next(l for l in run.out.splitlines() if l.startswith("{")))
  assert line["pairs_per_s"] > 0 and line["pairs"] == 64 * 128, line


def check_show_record(docs: Docs, run: Run) -> None:
  del docs
  assert run.rc == 0, run.out
  assert "vilbert_vqa2/default:minval record 0 of 4" in run.out, run.out
  assert "vqa: [" in run.out


@dataclasses.dataclass(frozen=True)
class Runner:
  """How one documented command runs here.

  Attributes:
    command: the command exactly as documented (lines joined, comment dropped).
    check: asserts on its result and on the files it wrote.
    inputs: writes the files it reads (in the real formats), once per module.
    after: documented commands (or builder names: BUILD_ALIASES) whose outputs it reads;
      they run first.
    expand: turns a template (placeholders, [optional flags]) into the commands that run.
  """
  command: str
  check: Callable[[Docs, Run], None]
  inputs: Callable[[Docs], None] = _nothing
  after: Tuple[str, ...] = ()
  expand: Optional[Callable[[str], List[str]]] = None

  def commands(self) -> List[str]:
    return self.expand(self.command) if self.expand else [self.command]


RUNNERS = [
    # README.md
    Runner(DEMO, check_demo),
    Runner("python launch.py --config configs/vqa_synthetic.py --workdir /tmp/vqa_synthetic "
           "--config.init_checkpoint=/tmp/vilbert_demo", check_vqa_synthetic, after=(DEMO,)),
    Runner("python -m vilbert_jax.convert original --checkpoint pytorch_model_9.bin --config "
           "bert_base_6layer_6conect.json --output /ckpt/vilbert_base", check_convert_original,
           inputs=write_released),
    Runner("python -m vilbert_jax.convert hf_bert --checkpoint bert-base-uncased/model.safetensors"
           " --config bert_base_6layer_6conect.json --output /ckpt/vilbert_from_bert",
           check_convert_hf_bert, inputs=write_bert),
    Runner(BUILD_CC, check_build_cc, inputs=write_cc),
    Runner("python -m vilbert_jax.data.inspect store /data/cc/features_train.tsv",
           check_store(8), inputs=write_cc),
    Runner(PRETRAIN_CC, check_pretrain_cc, inputs=write_bert, after=(BUILD_CC,)),
    Runner("python launch.py --config configs/pretrain_cc.py --config.mode=benchmark",
           check_benchmark),
    Runner(DEMO + " --config.mode=eval", check_demo_eval, after=(DEMO,)),
    Runner(VQA_FINETUNE, check_vqa, inputs=write_manual_dirs,
           after=(PRETRAIN_CC, "vilbert_vqa2")),
    Runner("python launch.py --config configs/vqa.py --workdir /ckpt/vqa --config.mode=eval "
           "--config.data.eval_splits='(\"minval\",\"test_dev\")' --config.data.data_dir="
           "/data/tfds --config.data.tokenizer=/bert/vocab.txt", check_vqa_eval,
           after=(VQA_FINETUNE,)),
    Runner("python launch.py --config configs/zeroshot_flickr30k.py --workdir /tmp/zs "
           "--config.init_checkpoint=/ckpt/cc --config.data.data_dir=/data/tfds "
           "--config.data.tokenizer=/bert/vocab.txt", check_zeroshot, inputs=write_manual_dirs,
           after=(PRETRAIN_CC, "vilbert_flickr30k")),
    Runner(BENCH_DATA, check_benchmark_data),
    Runner(BENCH_DATA_FLOAT16, check_benchmark_data),
    Runner("python scripts/benchmark_retrieval.py --preset tiny --captions 64 --images 128",
           check_benchmark_retrieval),
    # vilbert_jax/data/README.md
    Runner("python -m vilbert_jax.data.inspect store /data/cc/features_train.tsv "
           "--feature_dim 2048", check_store(8), inputs=write_cc),
    Runner("python -m vilbert_jax.data.inspect dataset vilbert_vqa2/default --data_dir ~/tfds "
           "--split minval", check_show_record, inputs=write_manual_dirs,
           after=("vilbert_vqa2",)),
    Runner(BUILD_TEMPLATE, check_template_build, inputs=write_manual_dirs,
           expand=template_builds),
]


def runner_of(command: str) -> Runner:
  """The runner whose command, or one of whose expansions, is `command`."""
  matches = [r for r in RUNNERS if command in r.commands()]
  assert len(matches) == 1, f"{len(matches)} runners for: {command}"
  return matches[0]


# Builder name -> the builder template's build of it without optional flags (for `after`).
BUILD_ALIASES = {c.split()[3]: c for c in template_builds(BUILD_TEMPLATE) if "--float16" not in c}


@pytest.fixture(scope="module")
def docs(tmp_path_factory):
  """One folder (and one memory of runs) for every documented command of this module."""
  return Docs(tmp_path_factory.mktemp("docs"))


def test_every_documented_command_has_a_runner():
  documented = documented_commands()
  missing = [f"{c}  ({', '.join(w)})" for c, w in documented.items()
             if c not in EXCLUDED and c not in RUN_ELSEWHERE
             and not any(r.command == c for r in RUNNERS)]
  assert not missing, "documented commands without a runner in this file:\n" + "\n".join(missing)
  stale = [r.command for r in RUNNERS if r.command not in documented]
  assert not stale, "runners of commands no README documents any more:\n" + "\n".join(stale)
  assert set(EXCLUDED) <= set(documented), set(EXCLUDED) - set(documented)
  assert set(RUN_ELSEWHERE) <= set(documented), set(RUN_ELSEWHERE) - set(documented)
  for command, test_id in RUN_ELSEWHERE.items():  # the named test exists
    path, name = test_id.split("::")
    tree = ast.parse((ROOT / path).read_text())
    assert any(isinstance(node, ast.FunctionDef) and node.name == name
               for node in tree.body), f"{test_id} (runs {command}) does not exist"
  for command, flags in APPENDED.items():
    assert command in documented, command
    written = {a.split("=")[0] for a in shlex.split(command)}
    assert not written & {f.split("=")[0] for f in flags}, command  # never a written flag


@pytest.mark.parametrize("runner", RUNNERS, ids=lambda r: r.command[:60])
def test_documented_command_runs_as_written(docs, runner):
  for command in runner.commands():
    runner.check(docs, docs.run(command))
