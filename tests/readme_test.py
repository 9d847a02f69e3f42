"""The README's promises: its loss example runs as printed, its commands exist."""

import pathlib
import re
import subprocess
import sys

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def _section(title: str) -> str:
  text = README.read_text()
  start = text.index(f"## {title}")
  end = text.find("\n## ", start + 1)
  return text[start:end if end > 0 else None]


def test_losses_example_runs_as_printed():
  code = re.findall(r"```python\n(.*?)```",
                    _section("Using the losses in your own RL code"),
                    re.DOTALL)[0]
  result = subprocess.run([sys.executable, "-c", code], capture_output=True,
                          text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.startswith("loss ")
  for key in ("loss/total", "loss/pg", "loss/divergence", "reward/mean",
              "kl/teacher"):
    assert key in result.stdout


def test_quickstart_has_exactly_two_commands():
  lines = _section("Quickstart").splitlines()
  first = next(i for i, line in enumerate(lines) if line.startswith("    "))
  commands = []
  for line in lines[first:]:  # the first indented block: the commands
    if not line.startswith("    "):
      break
    commands.append(line.strip())
  assert commands == ["python -m gkdrl.runners.train",
                      "python -m pytest -n 2 tests"]


def test_ci_runs_the_readme_test_command():
  ci = (README.parent / ".ci" / "run").read_text()
  assert "python -m pytest -n 2 tests" in ci
  assert 'pip install --quiet -e ".[test]"' in ci
  assert "python -m gkdrl.assets fetch" in ci
