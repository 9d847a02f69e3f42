"""The training program around an agent: data, keys, logging, checkpoints.

    state = loop.train(agent=..., state=..., task=..., config=LoopConfig(...),
                       workdir=..., teacher_params=..., reward_params=...)

writes into `workdir`:
  metrics.jsonl           one JSON object per logged step ("step" + floats;
                          with `split_metrics`, <part>/metrics.jsonl each)
  checkpoints/<step>/     orbax checkpoints (atomic), resumed from on rerun
  eval/step_<N>.json      evaluations every `eval_every` steps
  eval/final.json         the evaluation after the last step

(in a multi-host run only process 0 writes these files, except the
checkpoints, which orbax writes with all processes).

Every step's randomness is `fold_in(PRNGKey(seed), step)`, and the data order
depends only on the seed, so a resumed run reaches the same final state as an
uninterrupted one.

The host does not wait for each update: a step's loss is checked for NaN
one step later (while the device runs the next update, the host loads and
tokenizes the next batch), except on steps that log, save or evaluate,
which check it at once so that nothing is written after a bad step. The
update skips a non-finite step (the state stays as it was), so the one
extra update dispatched before a late check changes nothing that is kept.
"""

from collections.abc import Callable
import dataclasses
import os
import pathlib
from typing import Any

from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np
import tqdm

from gkdrl import parallel
from gkdrl.agents import base as agent_base
from gkdrl.tasks import base as tasks_base
from gkdrl.runners import checkpointing


class TrainingDivergedError(RuntimeError):
  """The loss became NaN or Inf; the last good checkpoint is kept."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class LoopConfig:
  """Settings of the training loop.

  Attributes:
    steps: total updates, >= 1 (a resumed run stops at the same step).
    batch_size: prompts per batch, >= 1.
    seed: seed of the data order and of every step's PRNG key.
    log_every: steps between metrics lines, >= 1.
    eval_every: steps between evaluations; 0 evaluates only at the end.
    save_every: steps between checkpoints, >= 1 (the last step is always
      saved).
    progress: show a progress bar.
  """

  steps: int
  batch_size: int
  seed: int = 0
  log_every: int = 10
  eval_every: int = 0
  save_every: int = 100
  progress: bool = True

  def __post_init__(self):
    for name, minimum in (("steps", 1), ("batch_size", 1), ("log_every", 1),
                          ("eval_every", 0), ("save_every", 1)):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int) or (
          value < minimum):
        raise ValueError(f"{name}={value!r} must be an int >= {minimum}.")


EvaluateFn = Callable[[Any], dict[str, dict[str, float]]]


MetricsSplitter = Callable[[dict[str, Any]], dict[str, dict[str, float]]]


def _check_finite(step: int, loss, last_saved: int,
                  directory: pathlib.Path) -> None:
  """Raises TrainingDivergedError if `loss` (of `step`) has a NaN or Inf.

  `loss` is a scalar, or an array of them (a stacked agent's, one per
  member).
  """
  loss = np.asarray(jax.device_get(loss), np.float64)
  if not np.all(np.isfinite(loss)):
    shown = float(loss) if loss.ndim == 0 else loss.tolist()
    raise TrainingDivergedError(
        f"Non-finite loss {shown} at step {step}; training stopped. The "
        f"last good checkpoint (step {last_saved}) in {directory} is intact.")


class _MetricsLog:
  """The metrics lines of a run: `<workdir>/metrics.jsonl`, or with a
  splitter one file per part, `<workdir>/<part>/metrics.jsonl`."""

  def __init__(self, workdir: pathlib.Path, resume_step: int,
               split: MetricsSplitter | None, write: bool):
    self._workdir, self._resume_step = workdir, resume_step
    self._split, self._write = split, write
    self._writers = {}

  def log(self, step: int, values: dict[str, Any]) -> dict[str, float]:
    """Writes one step; returns the metrics of the first part (for show)."""
    if self._split is None:
      parts = {"": checkpointing.to_python(values)}
    else:
      parts = self._split(jax.device_get(values))
    for part, metrics in parts.items():
      if not self._write:
        continue
      if part not in self._writers:
        (self._workdir / part).mkdir(parents=True, exist_ok=True)
        self._writers[part] = checkpointing.MetricsWriter(
            self._workdir / part, resume_step=self._resume_step)
      self._writers[part].write(step, metrics)
    return next(iter(parts.values()), {})


def _postfix(metrics: dict[str, float]) -> dict[str, str]:
  shown = {"loss/total": "loss", "reward/mean": "reward",
           "kl/teacher": "kl"}
  return {short: f"{metrics[k]:.4g}" for k, short in shown.items()
          if k in metrics}


def train(*, agent: agent_base.Agent, state: agent_base.TrainingState, task,
          config: LoopConfig, workdir: str | os.PathLike,
          teacher_params: Any = None, reward_params: Any = None,
          evaluate_fn: EvaluateFn | None = None,
          mesh: jax.sharding.Mesh | None = None,
          split_metrics: MetricsSplitter | None = None
          ) -> agent_base.TrainingState:
  """Trains `agent` from `state` (or from the latest checkpoint in workdir).

  Args:
    agent: the agent.
    state: the initial training state (also the restore target).
    task: the task whose train split feeds the prompts.
    config: loop settings.
    workdir: the run directory.
    teacher_params: passed to `act` and `update`.
    reward_params: passed to `act`.
    evaluate_fn: `evaluate_fn(student_params) -> {"greedy": {...}, ...}`;
      with a mesh, called on every process with the sharded parameters
      (`gkdrl.evaluation.evaluate` gathers them) and must give them all
      the same results.
    mesh: a device mesh (`gkdrl.parallel.make_mesh`): the state and the
      teacher are sharded by `gkdrl.parallel`'s rules, every batch over the
      data axes (each process reads only its rows of it), the update runs
      with explicit input and output shardings (`parallel.jit_update`), and
      a checkpoint restores onto this mesh whatever mesh wrote it. None
      runs on the default device.
    split_metrics: for agents whose metrics are arrays with one entry per
      member (`gkdrl.agents.make_stacked_agent`): `split_metrics(values)
      -> {part: {key: float}}`, and each part's metrics go to
      `<workdir>/<part>/metrics.jsonl` instead of `<workdir>/metrics.jsonl`.

  Returns:
    The final training state.

  Raises:
    TrainingDivergedError: on a NaN or Inf loss, naming the step; nothing
      is saved after it, so the last checkpoint stays good.
  """
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  checkpointer = checkpointing.Checkpointer(workdir)
  start = checkpointer.latest_step() or 0
  if mesh is not None:
    state = parallel.shard_state(state, mesh)
    teacher_params = (None if teacher_params is None
                      else parallel.shard_params(teacher_params, mesh))
  if start:
    target = state if mesh is None else parallel.abstract_like(
        state, parallel.state_shardings(state, mesh))
    state = checkpointer.restore(target, start)
    logging.info("Resumed from the checkpoint of step %d in %s.", start,
                 checkpointer.directory)
  # Processes of a multi-host run share the workdir: only the first writes
  # metrics lines (orbax coordinates the checkpoints itself).
  lead = jax.process_index() == 0
  metrics_log = _MetricsLog(workdir, start, split_metrics, write=lead)
  # config.batch_size is global: each process reads its rows of it.
  batches = task.batches("train", config.batch_size, seed=config.seed,
                         num_epochs=None, drop_remainder=True,
                         **parallel.process_split())
  update = agent.update
  if mesh is not None:
    update = parallel.jit_update(agent.update, mesh, state, teacher_params)
  for _ in range(start):  # the data order depends only on the seed
    next(batches)
  root_key = jax.random.key(config.seed)
  bar = tqdm.tqdm(total=config.steps, initial=start, desc=agent.name,
                  disable=not (config.progress and lead),
                  dynamic_ncols=True)
  last_saved = start
  unchecked = None  # (step, loss) of an update whose loss is not read yet
  try:
    for step in range(start + 1, config.steps + 1):
      act_key, update_key = jax.random.split(jax.random.fold_in(root_key,
                                                                step))
      task_batch = next(batches)
      if mesh is not None:
        task_batch = parallel.global_task_batch(
            task_batch, mesh, tasks_base.pad_token_id(task.tokenizer))
      batch, info = agent.act(state, task_batch, act_key,
                              teacher_params=teacher_params,
                              reward_params=reward_params)
      if mesh is not None:
        batch = parallel.shard_batch(batch, mesh)
      state, metrics = update(state, batch, teacher_params, update_key)
      if unchecked is not None:
        _check_finite(*unchecked, last_saved, checkpointer.directory)
      unchecked = (step, metrics["loss/total"])
      log = step % config.log_every == 0 or step == config.steps
      save = step % config.save_every == 0 or step == config.steps
      evaluate = bool(evaluate_fn and config.eval_every and (
          step % config.eval_every == 0) and step != config.steps)
      if log or save or evaluate:
        _check_finite(*unchecked, last_saved, checkpointer.directory)
        unchecked = None
      if log:
        shown = metrics_log.log(step, {**metrics, **info})
        bar.set_postfix(_postfix(shown), refresh=False)
      bar.update(1)
      if save:
        checkpointer.save(step, state)
        last_saved = step
      if evaluate:
        # Every process evaluates (the same metrics); the first writes.
        results = {"step": step, **evaluate_fn(state.params)}
        if lead:
          checkpointing.write_json(workdir / "eval" / f"step_{step}.json",
                                   results)
  finally:
    bar.close()
    checkpointer.close()
  if evaluate_fn:
    results = {"step": config.steps, **evaluate_fn(state.params)}
    if lead:
      checkpointing.write_json(workdir / "eval" / "final.json", results)
  if jax.process_count() > 1:
    # The others may read what the first wrote once `train` returns.
    multihost_utils.sync_global_devices("gkdrl.runners.loop.train")
  return state
