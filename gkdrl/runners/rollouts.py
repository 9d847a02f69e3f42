"""The training batches of a loop, in step order, built now or one ahead.

    rollouts = Rollouts(agent, batches, root_key=..., ahead=False, ...)
    batch, info = rollouts.get(step, state)   # the batch of `step`
    rollouts.start_next(step, state)          # before `update` donates state
    state, metrics = agent.update(state, batch, ...)
    rollouts.prefetch()                       # while the update runs

Synchronous (`ahead=False`): `get` acts with the state it is given, the
result of update `step - 1` (what Algorithm 1 of the GKD paper does).
`prefetch` reads the next task batch (tokenization on the host) while the
device runs the update just dispatched (after it, where CPU computations
run on the calling thread: `runners.cpu_memory`).

Asynchronous (`ahead=True`, `--async_rollouts`): `start_next(step, state)`
starts acting for step + 1 in a worker thread, with a copy of the state
that update `step` starts from, so its sampling and host rewards overlap
update `step` on the device; `get(step + 1)` waits for it. Batch t + 1 is
thus sampled from the parameters one update older than a synchronous loop
would use (the policy lag, logged as `train/policy_lag` = 1), as TRL's
generation buffer does. The copy holds every part of the state except the
optimizer's (parameters, reference, LoRA base), because `update` donates
the state it is given. The first step after a start or a resume has no
batch ahead and acts synchronously (lag 0), so a resumed asynchronous run
is not bit-identical to an uninterrupted one.

Every step's keys are `split(fold_in(PRNGKey(seed), step))` in both modes.
"""

from collections.abc import Iterator
import concurrent.futures
from typing import Any

import jax
import jax.numpy as jnp

from gkdrl import parallel
from gkdrl.tasks import base as tasks_base

POLICY_LAG = "train/policy_lag"


def step_keys(root_key, step: int):
  """(act_key, update_key) of `step`."""
  return jax.random.split(jax.random.fold_in(root_key, step))


class Rollouts:
  """Training batches in step order; see the module docstring."""

  def __init__(self, agent, batches: Iterator[Any], *, root_key, ahead: bool,
               mesh, task, teacher_params, reward_params):
    self._agent, self._batches, self._root_key = agent, batches, root_key
    self._ahead, self._mesh, self._task = ahead, mesh, task
    self._params = dict(teacher_params=teacher_params,
                        reward_params=reward_params)
    self._next_task_batch = None
    self._pending = None  # (step, future) of a batch acted ahead
    self._executor = (concurrent.futures.ThreadPoolExecutor(
        1, thread_name_prefix="gkdrl-rollouts") if ahead else None)

  def _task_batch(self):
    task_batch, self._next_task_batch = self._next_task_batch, None
    if task_batch is None:
      task_batch = next(self._batches)
    if self._mesh is not None:
      task_batch = parallel.global_task_batch(
          task_batch, self._mesh,
          tasks_base.pad_token_id(self._task.tokenizer))
    return task_batch

  def _act(self, step: int, state, task_batch):
    act_key, _ = step_keys(self._root_key, step)
    batch, info = self._agent.act(state, task_batch, act_key,
                                  **self._params)
    if self._mesh is not None:
      batch = parallel.shard_batch(batch, self._mesh)
    return batch, info

  def get(self, step: int, state):
    """(batch, info) of `step`: acted ahead, else now with `state`."""
    if self._pending is not None:
      pending_step, future = self._pending
      self._pending = None
      if pending_step == step:
        batch, info = future.result()
        return batch, {**info, POLICY_LAG: 1.0}
      future.cancel()
    batch, info = self._act(step, state, self._task_batch())
    return batch, ({**info, POLICY_LAG: 0.0} if self._ahead else info)

  def start_next(self, step: int, state, last_step: int) -> None:
    """With `ahead`: starts acting for step + 1 from a copy of `state`.

    Call it before `update` of `step` donates `state`.
    """
    if not self._ahead or step >= last_step:
      return
    # The copies are dispatched before the update, so they read `state`
    # before its buffers are donated.
    acting_state = jax.tree.map(jnp.copy, state._replace(opt_state=None))
    task_batch = self._task_batch()
    self._pending = (step + 1, self._executor.submit(
        self._act, step + 1, acting_state, task_batch))

  def prefetch(self) -> None:
    """Reads the next task batch now (synchronous mode; no-op ahead)."""
    if not self._ahead and self._next_task_batch is None:
      self._next_task_batch = next(self._batches)

  def close(self) -> None:
    if self._executor is not None:
      if self._pending is not None:
        self._pending[1].cancel()
      self._executor.shutdown(wait=True)
