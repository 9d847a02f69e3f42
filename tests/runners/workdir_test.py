"""The workdir lock and the resume rules."""

import json
import logging
import os
import socket
import subprocess
import sys
import types

import pytest

from gkdrl.runners import workdir


def _write_lock(path, pid, host=None):
  (path / workdir.LOCK_NAME).write_text(json.dumps(
      {"pid": pid, "host": host or socket.gethostname()}))


def _dead_pid() -> int:
  child = subprocess.Popen([sys.executable, "-c", "pass"])
  child.wait()
  return child.pid


def test_the_lock_holds_pid_and_host_and_is_released(tmp_path):
  with workdir.Lock(tmp_path):
    holder = json.loads((tmp_path / ".lock").read_text())
    assert holder == {"pid": os.getpid(), "host": socket.gethostname()}
  assert not (tmp_path / ".lock").exists()


def test_the_lock_is_released_on_an_exception(tmp_path):
  with pytest.raises(KeyError):
    with workdir.Lock(tmp_path):
      raise KeyError("boom")
  assert not (tmp_path / ".lock").exists()


def test_the_lock_is_reentrant_in_one_process(tmp_path):
  with workdir.Lock(tmp_path):
    with workdir.Lock(tmp_path):
      pass
    assert (tmp_path / ".lock").exists()  # the outer holder still runs
  assert not (tmp_path / ".lock").exists()


def test_a_live_holder_is_refused_with_its_pid(tmp_path):
  _write_lock(tmp_path, os.getppid())  # a live process, not this one
  with pytest.raises(workdir.WorkdirLockedError,
                     match=f"in use by process {os.getppid()} on host"):
    with workdir.Lock(tmp_path):
      pass
  assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getppid()


def test_a_second_process_is_refused(tmp_path):
  script = ("import sys, time; from gkdrl.runners import workdir\n"
            "with workdir.Lock(sys.argv[1]):\n"
            "  print('locked', flush=True); time.sleep(60)\n")
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  child = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)],
                           stdout=subprocess.PIPE, text=True, env=env)
  try:
    assert child.stdout.readline().strip() == "locked"
    with pytest.raises(workdir.WorkdirLockedError,
                       match=f"process {child.pid} "):
      with workdir.Lock(tmp_path):
        pass
  finally:
    child.kill()
    child.wait()
  # Killed without releasing: the lock is stale and taken over.
  with workdir.Lock(tmp_path):
    assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()


def test_a_stale_lock_is_taken_over_with_a_warning(tmp_path, caplog):
  pid = _dead_pid()
  _write_lock(tmp_path, pid)
  with caplog.at_level(logging.WARNING):
    with workdir.Lock(tmp_path):
      assert json.loads(
          (tmp_path / ".lock").read_text())["pid"] == os.getpid()
  assert "stale lock" in caplog.text and str(pid) in caplog.text
  assert not (tmp_path / ".lock").exists()


def test_a_lock_of_another_host_is_refused(tmp_path):
  _write_lock(tmp_path, _dead_pid(), host="some-other-host")
  with pytest.raises(workdir.WorkdirLockedError, match="some-other-host"):
    with workdir.Lock(tmp_path):
      pass


def _config(**overrides):
  config = {"agent": "gkd_rl", "alpha": 0.5, "steps": 10, "eval_every": 0,
            "workdir": "runs/a", "student_path": "/m/student",
            "agent_config": {"alpha": 0.5, "param_dtype": "float32",
                             "optimizer": {"decay_steps": 10,
                                           "learning_rate": 1e-3}}}
  config.update(overrides)
  return config


def test_config_differences_name_each_changed_field():
  new = _config(alpha=0.7, student_path="/m/other", agent_config={
      "alpha": 0.7, "param_dtype": "bfloat16",
      "optimizer": {"decay_steps": 10, "learning_rate": 1e-3}})
  assert workdir.config_differences(_config(), new) == [
      "agent_config.alpha: 0.5 -> 0.7",
      "agent_config.param_dtype: 'float32' -> 'bfloat16'",
      "alpha: 0.5 -> 0.7",
      "student_path: '/m/student' -> '/m/other'"]


def test_more_steps_and_other_intervals_are_safe():
  new = _config(steps=30, eval_every=5, workdir="/abs/runs/a",
                agent_config={"alpha": 0.5, "param_dtype": "float32",
                              "optimizer": {"decay_steps": 30,
                                            "learning_rate": 1e-3}})
  assert workdir.config_differences(_config(), new) == []


def _with_checkpoint(path, config):
  (path / "checkpoints" / "4").mkdir(parents=True)
  (path / "config.json").write_text(json.dumps(config))


def test_check_resume_refuses_changed_settings(tmp_path):
  _with_checkpoint(tmp_path, _config())
  with pytest.raises(ValueError, match=r"(?s)step 4.*alpha: 0.5 -> 0.7.*"
                     r"--force_new_run"):
    workdir.check_resume(tmp_path, _config(alpha=0.7))
  workdir.check_resume(tmp_path, _config(steps=40))


def test_check_resume_without_checkpoints_allows_anything(tmp_path):
  (tmp_path / "config.json").write_text(json.dumps(_config()))
  workdir.check_resume(tmp_path, _config(alpha=0.7))


def test_check_steps_refuses_a_checkpoint_past_the_last_step(tmp_path):
  with pytest.raises(ValueError, match=r"steps=20 is not allowed; .*"
                     r"already at step 30, so a resume needs steps >= 30"):
    workdir.check_steps(30, 20, tmp_path)
  workdir.check_steps(30, 30, tmp_path)


def test_start_new_run_moves_the_previous_run_aside(tmp_path):
  _with_checkpoint(tmp_path, _config())
  (tmp_path / "notes.txt").write_text("mine")
  moved = workdir.start_new_run(tmp_path)
  assert moved == tmp_path / "previous_run_1"
  assert (moved / "checkpoints" / "4").is_dir()
  assert (moved / "config.json").exists()
  assert (tmp_path / "notes.txt").exists()
  assert not (tmp_path / "checkpoints").exists()
  workdir.check_resume(tmp_path, _config(alpha=0.7))  # nothing to resume
  _with_checkpoint(tmp_path, _config())
  assert workdir.start_new_run(tmp_path) == tmp_path / "previous_run_2"
  assert workdir.start_new_run(tmp_path) is None


def test_a_setting_missing_from_an_older_config_counts_as_its_default():
  old = _config()
  new = _config(async_rollouts=False, skip_bad_rows=3)
  defaults = {"async_rollouts": False, "skip_bad_rows": 0}
  # The run predates both settings: the default one matches, the other not.
  assert workdir.config_differences(old, new, defaults) == [
      "skip_bad_rows: 0 -> 3"]
  # Without the defaults both read as None in the old run.
  assert workdir.config_differences(old, new) == [
      "async_rollouts: None -> False", "skip_bad_rows: None -> 3"]


def test_train_defaults_cover_every_described_setting():
  from gkdrl.runners import config as config_lib  # pylint: disable=g-import-not-at-top
  from gkdrl.runners import train  # pylint: disable=g-import-not-at-top
  config = config_lib.RunConfig()
  defaults = train.default_settings(config)
  described = train.describe(config, types.SimpleNamespace(
      student_path="s", teacher_path="t"))
  assert set(described) - set(defaults) == {"student_path", "teacher_path"}
  assert set(described["agent_config"]) == set(defaults["agent_config"])
  # A config.json written before --async_rollouts and the agent's
  # cross_tokenizer existed resumes under today's default run.
  old = {k: v for k, v in described.items() if k != "async_rollouts"}
  old["agent_config"] = {k: v for k, v in described["agent_config"].items()
                         if k != "cross_tokenizer"}
  assert workdir.config_differences(old, described, defaults) == []
  assert len(workdir.config_differences(old, described)) == 2
