"""`async_rollouts`: batch t + 1 sampled from the parameters update t reads."""

import json

import jax
import jax.numpy as jnp
import numpy as np

from gkdrl import agents
from gkdrl import networks
from gkdrl import parallel
from gkdrl import tasks
from gkdrl.agents import base
from gkdrl.runners import loop
from gkdrl.runners import rollouts
from tests.runners.loop_test import FakeTask
from tests.runners.loop_test import initial_state
from tests.tiny_models import tiny_config


def counting_agent():
  """Its parameter counts updates; `act` reports the count it samples with."""

  def act(state, task_batch, key, **kwargs):
    del key, kwargs
    return task_batch, {"rollout/w": state.params["w"][0]}

  def update(state, batch, teacher_params, key):
    del batch, teacher_params, key
    return (state._replace(params={"w": state.params["w"] + 1.0},
                           step=state.step + 1),
            {"loss/total": jnp.float32(1.0)})

  return base.Agent(name="count", config=None, init=None, act=act,
                    update=update, uses_teacher=False, uses_reward=False)


def _metrics(workdir):
  return [json.loads(line) for line in
          (workdir / "metrics.jsonl").read_text().splitlines()]


def _run(tmp_path, async_rollouts):
  config = loop.LoopConfig(steps=6, batch_size=1, log_every=1,
                           progress=False, async_rollouts=async_rollouts)
  workdir = tmp_path / str(async_rollouts)
  loop.train(agent=counting_agent(), state=initial_state(), task=FakeTask(),
             config=config, workdir=workdir)
  return _metrics(workdir)


def test_async_rollouts_sample_one_update_behind(tmp_path):
  sync = _run(tmp_path, False)
  ahead = _run(tmp_path, True)
  # Batch t: from the result of update t - 1 (sync), of update t - 2 ahead.
  assert [m["rollout/w"] for m in sync] == [0, 1, 2, 3, 4, 5]
  assert [m["rollout/w"] for m in ahead] == [0, 0, 1, 2, 3, 4]
  assert [m[rollouts.POLICY_LAG] for m in ahead] == [0, 1, 1, 1, 1, 1]
  assert all(rollouts.POLICY_LAG not in m for m in sync)
  # The same task batches in the same order.
  assert [m["step"] for m in ahead] == [1, 2, 3, 4, 5, 6]


def test_a_real_agent_samples_batch_3_from_the_parameters_of_update_1(
    tmp_path):
  task = tasks.make_task("facts", num_train=32, num_validation=8,
                         num_test=8)
  student = networks.make_model(tiny_config(task, 16, 1))
  teacher = networks.make_model(tiny_config(task, 24, 1))
  agent = agents.make_agent(
      agents.GKDConfig(lmbda=1.0, max_new_tokens=6,
                       optimizer=agents.OptimizerConfig(
                           learning_rate=0.3, warmup_steps=0)),
      student=student,
      teacher=teacher, tokenizer=task.tokenizer)
  student_params = student.init(jax.random.key(0))
  teacher_params = teacher.init(jax.random.key(1))
  seen = []

  def update(state, batch, *args):
    seen.append(np.asarray(batch.completion_tokens))
    return agent.update(state, batch, *args)

  def train(steps, async_rollouts, name):
    return loop.train(
        agent=agent._replace(update=update),
        state=agent.init(student_params), task=task,
        config=loop.LoopConfig(steps=steps, batch_size=4, log_every=1,
                               progress=False,
                               async_rollouts=async_rollouts),
        workdir=tmp_path / name, teacher_params=teacher_params)

  train(3, True, "ahead")
  assert [m[rollouts.POLICY_LAG] for m in _metrics(tmp_path / "ahead")
          ] == [0, 1, 1]
  ahead_batch_3 = seen[2]
  after_update_1 = train(1, False, "one")
  batches = task.batches("train", 4, seed=0, num_epochs=None,
                         drop_remainder=True, **parallel.process_split())
  task_batch_3 = [next(batches) for _ in range(3)][2]
  act_key, _ = rollouts.step_keys(jax.random.key(0), 3)
  batch, _ = agent.act(after_update_1, task_batch_3, act_key,
                       teacher_params=teacher_params)
  np.testing.assert_array_equal(ahead_batch_3, batch.completion_tokens)
  # A synchronous run samples batch 3 from the result of update 2 instead.
  seen.clear()
  train(3, False, "sync")
  assert not np.array_equal(seen[2], ahead_batch_3)
