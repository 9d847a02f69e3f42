"""The training loop: NaN losses, resume, and compiles per bucket shape."""

import json
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gkdrl import agents
from gkdrl import networks
from gkdrl.agents import base
from gkdrl import tasks
from gkdrl.runners import checkpointing
from gkdrl.runners import loop
from tests.tiny_models import tiny_config


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


def test_a_late_nan_check_still_writes_nothing_after_the_bad_step(tmp_path):
  # Step 6 is neither logged nor saved: its loss is read at step 8, the
  # next step that logs and saves, before anything of step 8 is written.
  config = loop.LoopConfig(steps=12, batch_size=1, save_every=4,
                           log_every=4, progress=False)
  agent = fake_agent(nan_at_step=6)
  dispatched = []

  def update(state, *args):
    dispatched.append(int(state.step) + 1)
    return agent.update(state, *args)

  with pytest.raises(loop.TrainingDivergedError,
                     match=r"step 6.*checkpoint \(step 4\)"):
    loop.train(agent=agent._replace(update=update), state=initial_state(),
               task=FakeTask(), config=config, workdir=tmp_path)
  assert dispatched == [1, 2, 3, 4, 5, 6, 7, 8]
  checkpointer = checkpointing.Checkpointer(tmp_path)
  assert checkpointer.latest_step() == 4
  checkpointer.close()
  steps = [json.loads(l)["step"]
           for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert steps == [4]


def test_losses_are_read_only_on_steps_that_log_save_or_evaluate(
    tmp_path, monkeypatch):
  reads = []
  check_all = loop._StepCheck.check_all

  def recording(self, pending, last_saved):
    reads.append([step for step, *_ in pending])
    check_all(self, pending, last_saved)

  monkeypatch.setattr(loop._StepCheck, "check_all", recording)
  config = loop.LoopConfig(steps=10, batch_size=1, save_every=4,
                           log_every=3, progress=False)
  loop.train(agent=fake_agent(nan_at_step=-1), state=initial_state(),
             task=FakeTask(), config=config, workdir=tmp_path)
  assert reads == [[1, 2, 3], [4], [5, 6], [7, 8], [9], [10]]


@pytest.fixture(scope="module")
def gkd_agent():
  """A gkd agent (lmbda 0.5) on tiny models of a small facts task."""
  task = tasks.make_task("facts", num_train=64, num_validation=16,
                         num_test=16)
  student = networks.make_model(tiny_config(task, 16, 1))
  teacher = networks.make_model(tiny_config(task, 24, 1))
  config = agents.GKDConfig(lmbda=0.5, max_new_tokens=8)
  agent = agents.make_agent(config, student=student, teacher=teacher,
                            tokenizer=task.tokenizer)
  return (agent, task, student.init(jax.random.key(0)),
          teacher.init(jax.random.key(1)))


def test_a_run_compiles_once_per_bucket_shape(gkd_agent, tmp_path, caplog):
  agent, task, student_params, teacher_params = gkd_agent
  shapes = set()

  def update(state, batch, *args):
    shapes.add(tuple((x.shape, x.dtype) for x in jax.tree.leaves(batch)))
    return agent.update(state, batch, *args)

  caplog.set_level(logging.INFO, logger="absl")
  config = loop.LoopConfig(steps=4, batch_size=4, save_every=4,
                           log_every=4, progress=False)
  counts = []
  for run in range(2):
    counts.append(base.compile_counts())
    loop.train(agent=agent._replace(update=update),
               state=agent.init(student_params), task=task, config=config,
               workdir=tmp_path / str(run), teacher_params=teacher_params)
  counts.append(base.compile_counts())
  first = {k: v - counts[0].get(k, 0) for k, v in counts[1].items()}
  # Exactly one compile per distinct batch shape the update saw, and only a
  # handful of those: every shape is a pair of task buckets (or T).
  assert first["update"] == len(shapes) >= 2
  assert len(shapes) <= len(task.prompt_buckets) * (
      len(task.target_buckets) + 1)
  assert first.get("sampler", 0) <= len(task.prompt_buckets)
  assert counts[2] == counts[1]  # the second run of those shapes: none
  logged = [r.getMessage() for r in caplog.records
            if r.getMessage().startswith("compiling update for shapes")]
  assert len(logged) == first["update"]


def fake_stacked_agent(nan_at_step: int):
  """Two members; member 1's loss goes NaN at `nan_at_step`."""
  one = fake_agent(nan_at_step=-1)

  def update(state, batch, teacher_params, key):
    state, metrics = one.update(state, batch, teacher_params, key)
    loss = metrics["loss/total"]
    bad = jnp.where(state.step == nan_at_step, jnp.nan, 2 * loss)
    return state, {"loss/total": jnp.stack([loss, bad])}  # [2]

  def act(state, task_batch, key, **kwargs):
    del state, key, kwargs
    return task_batch, {"rollout/length": jnp.asarray([1.0, 2.0])}

  return one._replace(update=update, act=act)


def _split(values):
  return {f"member_{i}": {k: float(np.asarray(v)[i])
                          for k, v in values.items()} for i in range(2)}


def test_stacked_metrics_go_to_one_file_per_member(tmp_path):
  config = loop.LoopConfig(steps=3, batch_size=1, log_every=1,
                           progress=False)
  loop.train(agent=fake_stacked_agent(nan_at_step=-1),
             state=initial_state(), task=FakeTask(), config=config,
             workdir=tmp_path, split_metrics=_split)
  assert not (tmp_path / "metrics.jsonl").exists()
  for i in range(2):
    lines = (tmp_path / f"member_{i}" / "metrics.jsonl").read_text()
    records = [json.loads(l) for l in lines.splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]
    assert [r["loss/total"] for r in records] == pytest.approx(
        [(1 + i) / s for s in (1, 2, 3)])
    assert all(r["rollout/length"] == 1.0 + i for r in records)


def test_a_nan_in_one_stacked_member_stops_training(tmp_path):
  config = loop.LoopConfig(steps=6, batch_size=1, save_every=2,
                           log_every=1, progress=False)
  with pytest.raises(loop.TrainingDivergedError,
                     match=r"loss \[0\.333.*, nan\] at step 3.*\(step 2\)"):
    loop.train(agent=fake_stacked_agent(nan_at_step=3),
               state=initial_state(), task=FakeTask(), config=config,
               workdir=tmp_path, split_metrics=_split)
  lines = (tmp_path / "member_1" / "metrics.jsonl").read_text()
  assert [json.loads(l)["step"] for l in lines.splitlines()] == [1, 2]
