"""The loop after trouble: damaged checkpoints, lost evaluations, skipped
updates, shorter resumes and a second process on one workdir."""

import json
import os
import socket

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gkdrl.agents import base
from gkdrl.runners import checkpointing
from gkdrl.runners import loop
from gkdrl.runners import workdir as workdir_lib
from tests.runners.loop_test import FakeTask
from tests.runners.loop_test import fake_agent
from tests.runners.loop_test import initial_state


def _config(steps, **kwargs):
  settings = dict(steps=steps, batch_size=1, save_every=2, log_every=1,
                  progress=False)
  settings.update(kwargs)
  return loop.LoopConfig(**settings)


def _train(workdir, steps, agent=None, **kwargs):
  evaluate_fn = kwargs.pop("evaluate_fn", None)
  return loop.train(agent=agent or fake_agent(nan_at_step=-1),
                    state=initial_state(), task=FakeTask(),
                    config=_config(steps, **kwargs), workdir=workdir,
                    evaluate_fn=evaluate_fn)


def test_resume_from_the_newest_intact_checkpoint(tmp_path):
  _train(tmp_path, 6)
  data = tmp_path / "checkpoints" / "6" / "default" / "d"
  for path in data.iterdir():
    path.write_bytes(path.read_bytes()[:10])  # a truncated copy
  state = _train(tmp_path, 6)
  np.testing.assert_array_equal(jax.device_get(state.params["w"]), 6.0)
  assert (tmp_path / "checkpoints" / "6.corrupt-0").is_dir()
  steps = [json.loads(l)["step"]
           for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert steps == [1, 2, 3, 4, 5, 6]  # 5 and 6 once, from the resume


def test_a_resume_with_fewer_steps_than_the_checkpoint_is_refused(tmp_path):
  evaluated = []
  _train(tmp_path, 6, evaluate_fn=lambda p: evaluated.append(1) or {})
  with pytest.raises(ValueError, match=r"steps=4 is not allowed; .*at step "
                     r"6, so a resume needs steps >= 6"):
    _train(tmp_path, 4, evaluate_fn=lambda p: evaluated.append(1) or {})
  assert json.loads((tmp_path / "eval" / "final.json").read_text()) == {
      "step": 6}
  assert len(evaluated) == 1


def test_a_lost_periodic_evaluation_is_redone_on_resume(tmp_path):
  def crash_after_saving_step_4(params):
    if float(params["w"][0]) == 4.0:
      raise KeyboardInterrupt  # a kill between the save and the evaluation
    return {"greedy": {"w": float(params["w"][0])}}

  with pytest.raises(KeyboardInterrupt):
    _train(tmp_path, 6, eval_every=2, evaluate_fn=crash_after_saving_step_4)
  assert checkpointing.saved_steps(tmp_path) == [2, 4]
  assert not (tmp_path / "eval" / "step_4.json").exists()
  evaluated = []

  def evaluate(params):
    evaluated.append(float(params["w"][0]))
    return {"greedy": {"w": float(params["w"][0])}}

  _train(tmp_path, 6, eval_every=2, evaluate_fn=evaluate)
  assert json.loads((tmp_path / "eval" / "step_4.json").read_text()) == {
      "step": 4, "greedy": {"w": 4.0}}
  assert evaluated == [4.0, 6.0]  # step 4 again, then the final one


def skipping_agent(skip_from: int, skip_until: int = 10**9):
  """Steps in [skip_from, skip_until) have a finite loss but are skipped."""

  def update(state, batch, teacher_params, key):
    del batch, teacher_params, key
    call = state.opt_state + 1  # counts calls, skipped or not
    skipped = (call >= skip_from) & (call < skip_until)
    params = {"w": jnp.where(skipped, state.params["w"],
                             state.params["w"] + 1.0)}
    metrics = {"loss/total": jnp.float32(1.0),
               "train/skipped": skipped.astype(jnp.float32)}
    return state._replace(params=params, opt_state=call), metrics

  agent = fake_agent(nan_at_step=-1)
  return agent._replace(update=update)


def _counting_state():
  return initial_state()._replace(opt_state=jnp.zeros((), jnp.int32))


def test_too_many_skipped_updates_in_a_row_stop_training(tmp_path):
  with pytest.raises(loop.TrainingDivergedError,
                     match=r"5 consecutive updates \(steps 4-8\) were "
                     r"skipped.*max_skipped_steps=5.*checkpoint \(step 6\)"):
    loop.train(agent=skipping_agent(skip_from=4), state=_counting_state(),
               task=FakeTask(), workdir=tmp_path,
               config=_config(50, log_every=10, max_skipped_steps=5))
  # The check reads each step late, as the NaN check does: nothing past
  # the stopping step was saved or logged.
  assert checkpointing.saved_steps(tmp_path) == [4, 6]


def test_skipped_updates_that_end_in_time_do_not_stop(tmp_path):
  state = loop.train(agent=skipping_agent(skip_from=3, skip_until=7),
                     state=_counting_state(), task=FakeTask(),
                     workdir=tmp_path,
                     config=_config(12, max_skipped_steps=5))
  np.testing.assert_array_equal(jax.device_get(state.params["w"]), 8.0)


def test_max_skipped_steps_is_checked():
  with pytest.raises(ValueError, match="max_skipped_steps=-1"):
    _config(1, max_skipped_steps=-1)


def test_train_refuses_a_workdir_locked_by_a_live_process(tmp_path):
  (tmp_path / ".lock").write_text(json.dumps(
      {"pid": os.getppid(), "host": socket.gethostname()}))
  with pytest.raises(workdir_lib.WorkdirLockedError,
                     match=f"process {os.getppid()}"):
    _train(tmp_path, 2)
  assert not (tmp_path / "checkpoints").exists()
  assert not (tmp_path / "metrics.jsonl").exists()


def test_train_releases_the_lock_after_a_divergence(tmp_path):
  with pytest.raises(loop.TrainingDivergedError):
    _train(tmp_path, 6, agent=fake_agent(nan_at_step=3))
  assert not (tmp_path / ".lock").exists()


def test_skipped_updates_of_one_stacked_member_stop_training(tmp_path):
  # A stacked agent reports one loss and one skipped flag per member.
  def update(state, batch, teacher_params, key):
    del batch, teacher_params, key
    call = state.opt_state + 1
    skipped = jnp.stack([jnp.zeros((), bool), call >= 3])  # [2]
    metrics = {"loss/total": jnp.ones(2),
               "train/skipped": skipped.astype(jnp.float32)}
    return state._replace(opt_state=call), metrics

  agent = fake_agent(nan_at_step=-1)._replace(update=update)
  with pytest.raises(loop.TrainingDivergedError,
                     match=r"4 consecutive updates of member 1 \(steps "
                     r"3-6\)"):
    loop.train(agent=agent, state=_counting_state(), task=FakeTask(),
               workdir=tmp_path, split_metrics=lambda m: {},
               config=_config(20, log_every=10, max_skipped_steps=4))
