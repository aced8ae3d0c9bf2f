"""The installed package: README "Use vilbert_jax in your project", run as written in a fresh
virtual environment, from a directory outside the checkout.

The environment has `--system-site-packages`, so the pinned dependencies installed for the
tests are reused, not downloaded; `pip install ".[train]"` builds the wheel from the checkout and
installs it. Everything after the install runs elsewhere, without PYTHONPATH.
"""
import json
import math
import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).parents[1]
SECTION = "## Use vilbert_jax in your project"


def _blocks(language: str):
  """The fenced blocks of `language` in the README section."""
  text = (ROOT / "README.md").read_text()
  section = text[text.index(SECTION):]
  section = section[:section.index("\n## ", len(SECTION))]
  return re.findall(rf"```{language}\n(.*?)```", section, re.S)


def _commands():
  """The section's shell commands, continuation lines joined."""
  return [c.strip() for c in _blocks("bash")[0].replace("\\\n", " ").splitlines() if c.strip()]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
  """A fresh venv: its python, an environment without PYTHONPATH, a folder outside ROOT."""
  base = tmp_path_factory.mktemp("install")
  venv = base / "venv"
  subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)],
                 check=True)
  environ = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "XLA_FLAGS")}
  environ["PATH"] = f"{venv / 'bin'}{os.pathsep}{environ['PATH']}"
  environ["VIRTUAL_ENV"] = str(venv)
  work = base / "elsewhere"
  work.mkdir()
  return environ, work


def _run(command: str, environ, cwd) -> str:
  proc = subprocess.run(["bash", "-c", command], env=environ, cwd=cwd, capture_output=True,
                        text=True, check=False)
  assert proc.returncode == 0, f"{command}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
  return proc.stdout


def _substitute(command: str, work: pathlib.Path) -> str:
  """README paths -> this test's: fixtures and the example from the checkout, /tmp -> `work`."""
  return (command.replace("tests/fixtures/", f"{ROOT}/tests/fixtures/")
          .replace("examples/", f"{ROOT}/examples/").replace("/tmp/", f"{work}/"))


def test_readme_install_section_runs_outside_the_checkout(env):
  environ, work = env
  commands = _commands()
  assert commands[0] == 'pip install ".[train]"'
  _run(commands[0], environ, ROOT)  # the one command that runs in the checkout

  where = _run("python -c 'import vilbert_jax, tfds_builders, configs; "
               "print(vilbert_jax.__file__, tfds_builders.__file__, configs.__file__)'",
               environ, work)
  assert str(ROOT) not in where and "site-packages" in where

  outputs = [_run(_substitute(c, work), environ, work) for c in commands[1:]]
  convert, example, build, launch = outputs
  assert "wrote" in convert
  losses = [float(m) for m in re.findall(r"loss (\S+)", example)]
  assert len(losses) == 5 and all(math.isfinite(x) for x in losses) and losses[-1] < losses[0]
  assert "train: 5000 records" in build
  metrics = [json.loads(line) for line in (work / "demo" / "metrics.jsonl").read_text().split(
      "\n") if line]
  assert any(m["split"] == "train" and m["step"] == 4 for m in metrics), launch
  assert any(m["split"] == "eval" for m in metrics)

  python = _blocks("python")[-1].replace("/tmp/", f"{work}/")
  shown = _run(f"python - <<'EOF'\n{python}EOF", environ, work).split()
  assert shown[0] == "5000" and shown[-1] == "64)"  # train records, [regions, 64]


def test_readme_model_snippet_is_the_example():
  snippet = _blocks("python")[-2]
  assert snippet in (ROOT / "examples" / "custom_head.py").read_text()


def test_launch_finds_the_shipped_configs_from_any_directory(tmp_path, monkeypatch):
  from vilbert_jax.launch import resolve_config_paths  # pylint: disable=import-outside-toplevel
  monkeypatch.chdir(tmp_path)
  argv = resolve_config_paths(["vilbert-launch", "--config", "configs/pretrain_cc.py:coattn2",
                               "--config=configs/vqa.py", "--config.x=configs/none.py"])
  assert argv[2] == f"{ROOT}/configs/pretrain_cc.py:coattn2"
  assert argv[3] == f"--config={ROOT}/configs/vqa.py"
  assert argv[4] == "--config.x=configs/none.py"  # only --config itself is resolved
  assert resolve_config_paths(["l", "--config", "configs/missing.py"])[2] == "configs/missing.py"
