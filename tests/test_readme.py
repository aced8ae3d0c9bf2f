"""The README's Python examples run as written and print what it says."""

import contextlib
import io
import pathlib
import re

ROOT = pathlib.Path(__file__).parents[1]


def _python_blocks() -> list[str]:
  return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


def test_model_example_runs_and_prints_the_documented_losses(monkeypatch):
  monkeypatch.chdir(ROOT)
  usage, maps = _python_blocks()[:2]
  printed = io.StringIO()
  namespace: dict = {}
  with contextlib.redirect_stdout(printed):
    exec(usage, namespace)  # pylint: disable=exec-used
    exec(maps, namespace)  # pylint: disable=exec-used
  documented = re.search(r"# (\{'masked_lm'.*\})", usage).group(1)
  assert documented in printed.getvalue()
  assert "(3, 12, 64) (3, 7, 48) (3, 32)" in printed.getvalue()
