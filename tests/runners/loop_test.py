"""The training loop: a NaN loss stops training and keeps the checkpoint."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gkdrl.agents import base
from gkdrl.runners import checkpointing
from gkdrl.runners import loop


class FakeTask:
  """Yields integer 'batches'; enough for a loop that ignores them."""

  def batches(self, split, batch_size, **kwargs):
    del split, batch_size, kwargs
    i = 0
    while True:
      yield i
      i += 1


def fake_agent(nan_at_step: int):
  """An agent whose parameter counts steps and whose loss goes NaN."""

  def act(state, task_batch, key, **kwargs):
    del state, key, kwargs
    return task_batch, {"rollout/length": 1.0}

  def update(state, batch, teacher_params, key):
    del batch, teacher_params, key
    step = state.step + 1
    loss = jnp.where(step == nan_at_step, jnp.nan, 1.0 / step)
    params = {"w": state.params["w"] + 1.0}
    return state._replace(params=params, step=step), {"loss/total": loss}

  return base.Agent(name="fake", config=None, init=None, act=act,
                    update=update, uses_teacher=False, uses_reward=False)


def initial_state():
  return base.TrainingState(params={"w": jnp.zeros(3)}, opt_state=(),
                            step=jnp.zeros((), jnp.int32))


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
  config = loop.LoopConfig(steps=10, batch_size=1, save_every=2,
                           log_every=1, progress=False)
  with pytest.raises(loop.TrainingDivergedError,
                     match=r"step 5.*checkpoint \(step 4\)"):
    loop.train(agent=fake_agent(nan_at_step=5), state=initial_state(),
               task=FakeTask(), config=config, workdir=tmp_path)
  checkpointer = checkpointing.Checkpointer(tmp_path)
  assert checkpointer.latest_step() == 4
  restored = checkpointer.restore(initial_state())
  np.testing.assert_array_equal(restored.params["w"], 4.0)
  checkpointer.close()
  steps = [json.loads(l)["step"]
           for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert steps == [1, 2, 3, 4]


def test_resume_continues_from_the_checkpoint(tmp_path):
  config = loop.LoopConfig(steps=6, batch_size=1, save_every=3,
                           progress=False)
  state = loop.train(agent=fake_agent(nan_at_step=-1), state=initial_state(),
                     task=FakeTask(), config=config, workdir=tmp_path)
  assert int(state.step) == 6
  longer = loop.LoopConfig(steps=8, batch_size=1, save_every=3,
                           progress=False)
  state = loop.train(agent=fake_agent(nan_at_step=-1), state=initial_state(),
                     task=FakeTask(), config=longer, workdir=tmp_path)
  assert int(state.step) == 8
  np.testing.assert_array_equal(jax.device_get(state.params["w"]), 8.0)


def test_loop_config_errors():
  with pytest.raises(ValueError, match="steps=0"):
    loop.LoopConfig(steps=0, batch_size=1)
  with pytest.raises(ValueError, match="batch_size=-1"):
    loop.LoopConfig(steps=1, batch_size=-1)
