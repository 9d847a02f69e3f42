"""The README's promises: its loss example runs as printed, its commands exist."""

import os
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


def _quickstart_commands() -> list[str]:
  lines = _section("Quickstart").splitlines()
  first = next(i for i, line in enumerate(lines) if line.startswith("    "))
  commands = []
  for line in lines[first:]:  # the first indented block: the commands
    if not line.startswith("    "):
      break
    commands.append(line.strip())
  return commands


def test_quickstart_has_exactly_two_commands():
  main_job, test_suite = _quickstart_commands()
  # The first installs the library and runs the main job on its defaults.
  install, run = main_job.split(" && ")
  assert install == "pip install -e ."
  assert run == "python -m gkdrl.runners.train"
  # The second installs the test extras and runs the whole suite.
  install, run = test_suite.split(" && ")
  assert install == 'pip install -e ".[test]"'
  assert run == "python -m pytest -n 2 tests"
  # No other section tells a new user to install things another way.
  assert "## Install" not in README.read_text()


def test_ci_runs_the_quickstart_commands():
  ci = README.parent / ".ci" / "run"
  result = subprocess.run(["bash", str(ci), "--dry-run"], capture_output=True,
                          text=True, timeout=60,
                          env={"PATH": os.environ["PATH"]})
  assert result.returncode == 0, result.stderr
  assert result.stdout.splitlines() == _quickstart_commands()
  script = ci.read_text()
  assert "GKDRL_REQUIRE_OPTIONAL=1" in script
  assert '"$status" -eq 5' in script  # "no tests collected" fails the run


def test_ci_refuses_a_quickstart_without_two_commands(tmp_path):
  (tmp_path / ".ci").mkdir()
  ci = tmp_path / ".ci" / "run"
  ci.write_text((README.parent / ".ci" / "run").read_text())
  (tmp_path / "README.md").write_text(
      "# x\n\n## Quickstart\n\n    pip install -e .\n\n## Next\n")
  result = subprocess.run(["bash", str(ci), "--dry-run"], capture_output=True,
                          text=True, timeout=60)
  assert result.returncode == 1
  assert "holds 1 commands, not 2" in result.stderr
