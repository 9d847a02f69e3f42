"""train.run on a workdir that holds a run: resume rules, --force_new_run."""

import json

import pytest

from gkdrl.runners import train
from tests.runners.runners_test import _cli
from tests.runners.runners_test import values


@pytest.fixture(scope="module")
def shared():
  return {}


@pytest.fixture(scope="module")
def finished(model_dirs, tmp_path_factory, shared):
  """A finished 2-step sft run's workdir (checkpoint 2), and its config."""
  workdir = tmp_path_factory.mktemp("resume") / "run"
  train.run(values(model_dirs, workdir, agent="sft", steps=2),
            progress=False, shared=shared)
  return workdir, (workdir / "config.json").read_text()


def test_a_resume_with_other_settings_is_refused(model_dirs, finished,
                                                 monkeypatch):
  workdir, config = finished
  monkeypatch.setattr(train.loop, "train", None)  # must not be reached
  with pytest.raises(ValueError) as error:
    train.run(values(model_dirs, workdir, agent="sft", steps=2,
                     learning_rate=0.5, seed=3), progress=False)
  message = str(error.value)
  assert "holds checkpoints (step 2) of a run with other settings" in message
  assert "learning_rate: 0.001 -> 0.5" in message
  assert "seed: 0 -> 3" in message
  assert "--force_new_run" in message
  assert (workdir / "config.json").read_text() == config  # not overwritten


def test_a_resume_with_fewer_steps_is_refused(model_dirs, finished,
                                              monkeypatch):
  workdir, config = finished
  final = (workdir / "eval" / "final.json").read_text()
  monkeypatch.setattr(train.loop, "train", None)
  with pytest.raises(ValueError, match=r"steps=1 is not allowed; the "
                     r"checkpoint in .* is already at step 2"):
    train.run(values(model_dirs, workdir, agent="sft", steps=1),
              progress=False)
  assert (workdir / "eval" / "final.json").read_text() == final
  assert (workdir / "config.json").read_text() == config


def test_force_new_run_moves_the_old_run_aside(model_dirs, tmp_path,
                                               shared):
  workdir = tmp_path / "run"
  train.run(values(model_dirs, workdir, agent="sft", steps=2),
            progress=False, shared=shared)
  old_metrics = (workdir / "metrics.jsonl").read_text()
  train.run(values(model_dirs, workdir, agent="gkd", steps=1,
                   force_new_run=True), progress=False, shared=shared)
  previous = workdir / "previous_run_1"
  assert (previous / "metrics.jsonl").read_text() == old_metrics
  assert (previous / "checkpoints" / "2").is_dir()
  assert json.loads((previous / "config.json").read_text())["agent"] == "sft"
  assert json.loads((workdir / "config.json").read_text())["agent"] == "gkd"
  assert [json.loads(l)["step"] for l in
          (workdir / "metrics.jsonl").read_text().splitlines()] == [1]
  assert not (workdir / ".lock").exists()


def test_evaluate_of_a_missing_step_names_the_saved_ones(finished):
  workdir, _ = finished
  result = _cli("gkdrl.runners.evaluate", f"--workdir={workdir}",
                "--step=7", "--eval_examples=2", "--max_new_tokens=4")
  assert result.returncode == 1
  assert "No checkpoint of step 7" in result.stderr
  assert "saved steps: 2." in result.stderr

