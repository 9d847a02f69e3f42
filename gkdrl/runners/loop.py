"""The training program around an agent: data, keys, logging, checkpoints.

    state = loop.train(agent=..., state=..., task=..., config=LoopConfig(...),
                       workdir=..., teacher_params=..., reward_params=...)

writes into `workdir`:
  metrics.jsonl           one JSON object per logged step ("step" + floats;
                          with `split_metrics`, <part>/metrics.jsonl each)
  checkpoints/<step>/     orbax checkpoints (atomic), resumed from on rerun
  eval/step_<N>.json      evaluations every `eval_every` steps
  eval/final.json         the evaluation after the last step
  eval/samples_<...>.jsonl  a few completions of each evaluation
  tensorboard/, wandb/    with `log_to` (see gkdrl.runners.loggers)
  .lock                   {"pid", "host"} of the process training there

(in a multi-host run only process 0 writes these files, except the
checkpoints, which orbax writes with all processes).

Every step's randomness is `fold_in(PRNGKey(seed), step)`, and the data order
depends only on the seed, so a resumed run reaches the same final state as an
uninterrupted one. A resume starts from the newest intact checkpoint
(damaged ones are moved aside, see `checkpointing`), refuses a checkpoint
past `steps`, and first redoes the evaluation of the checkpoint's step if a
kill lost it. A second process on the same workdir is refused (see
`workdir.Lock`).

The host does not wait for the updates: a step's loss and `train/skipped`
flag stay on the device until the next step that logs, saves or evaluates,
which reads those of every step since in one transfer and checks them
before anything is written, so no metrics line, checkpoint or evaluation
ever follows a bad step. The update skips a non-finite step (the state
stays as it was), and nothing computed after a bad step is kept: the error
names that step and the last good checkpoint. The same read counts updates
skipped in a row (`train/skipped`), and training stops once
`max_skipped_steps` of them have learned nothing. The next task batch is
read while the device runs the update, and with `async_rollouts` the next
training batch is sampled and rewarded then too, one update behind (see
`gkdrl.runners.rollouts`).
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
from gkdrl import validation
from gkdrl.agents import base as agent_base
from gkdrl.runners import checkpointing
from gkdrl.runners import loggers as loggers_lib
from gkdrl.runners import rollouts as rollouts_lib
from gkdrl.runners import workdir as workdir_lib


class TrainingDivergedError(RuntimeError):
  """The loss became NaN or Inf, or every update of too many steps in a
  row was skipped; the last good checkpoint is kept."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class LoopConfig:
  """Settings of the training loop.

  Attributes:
    steps: total updates, >= 1 (a resumed run stops at the same step).
    batch_size: prompts per batch, >= 1.
    seed: seed of data, initialisation and sampling: the data order and
      every step's PRNG key.
    log_every: steps between metrics lines, >= 1.
    eval_every: steps between evaluations; 0 evaluates only at the end.
    save_every: steps between checkpoints, >= 1 (the last step is always
      saved).
    progress: show a progress bar (not a run setting: the runners pass it).
    max_skipped_steps: stop after this many consecutive updates skipped for
      a non-finite loss or gradient (`train/skipped` = 1), >= 0; 0 never
      stops.
    log_to: where metrics and evaluation samples go: `jsonl` (always on),
      `tensorboard` (event files in <workdir>/tensorboard), `wandb` (Weights
      & Biases; WANDB_MODE=offline works without a network); a sequence or
      a comma list (see `gkdrl.runners.loggers`).
    async_rollouts: sample (and reward) the batch of step t + 1 while the
      update of step t runs, from the parameters that update starts from:
      one update of policy lag (`train/policy_lag`), as TRL's generation
      buffer, for a step's host and device work to overlap.
  """

  steps: int = 500
  batch_size: int = 16
  seed: int = 0
  log_every: int = 10
  eval_every: int = 0
  save_every: int = 50
  progress: bool = dataclasses.field(default=True,
                                     metadata={"setting": False})
  max_skipped_steps: int = 20
  log_to: tuple[str, ...] = ("jsonl",)
  async_rollouts: bool = False

  def __post_init__(self):
    object.__setattr__(self, "log_to",
                       loggers_lib.parse_log_to(self.log_to))
    validation.check_int("steps", self.steps, 1)
    validation.check_int("batch_size", self.batch_size, 1)
    validation.check_int("seed", self.seed)
    validation.check_int("log_every", self.log_every, 1)
    validation.check_int("eval_every", self.eval_every, 0)
    validation.check_int("save_every", self.save_every, 1)
    validation.check_int("max_skipped_steps", self.max_skipped_steps, 0)


# Returns mode -> metrics, or (mode -> metrics, mode -> sample records).
EvaluateFn = Callable[[Any], Any]


MetricsSplitter = Callable[[dict[str, Any]], dict[str, dict[str, float]]]


class _StepCheck:
  """Stops on a NaN or Inf loss, or on too many skipped updates in a row.

  The loss and the `train/skipped` flag are scalars, or arrays of them (a
  stacked agent's, one per member); each member's skipped updates are
  counted on their own.
  """

  def __init__(self, max_skipped: int, directory: pathlib.Path):
    self.max_skipped, self.directory = max_skipped, directory
    self.skipped_since = None  # per member: first step of its skipped run

  def check_all(self, pending: list, last_saved: int) -> None:
    """Checks [(step, loss, skipped), ...] in step order, one transfer."""
    values = jax.device_get([(loss, skipped) for _, loss, skipped in pending])
    for (step, _, _), (loss, skipped) in zip(pending, values):
      self(step, loss, skipped, last_saved)
    pending.clear()

  def __call__(self, step: int, loss, skipped, last_saved: int) -> None:
    loss, skipped = jax.device_get((loss, skipped))  # one transfer
    loss = np.asarray(loss, np.float64)
    kept = (f"The last good checkpoint (step {last_saved}) in "
            f"{self.directory} is intact.")
    if not np.all(np.isfinite(loss)):
      shown = float(loss) if loss.ndim == 0 else loss.tolist()
      raise TrainingDivergedError(
          f"Non-finite loss {shown} at step {step}; training stopped. {kept}")
    if skipped is None:
      return
    skipped = np.asarray(skipped) >= 1.0
    since = (np.full(skipped.shape, step) if self.skipped_since is None
             else self.skipped_since)
    self.skipped_since = np.where(skipped, since, step + 1)
    counts = np.where(skipped, step - self.skipped_since + 1, 0)
    if self.max_skipped and np.any(counts >= self.max_skipped):
      worst = np.unravel_index(np.argmax(counts), counts.shape)
      first = int(self.skipped_since[worst])
      member = "" if counts.ndim == 0 else f" of member {worst[0]}"
      raise TrainingDivergedError(
          f"{step - first + 1} consecutive updates{member} (steps "
          f"{first}-{step}) were skipped because their gradient was NaN or "
          "Inf (train/skipped = 1), so nothing was learned since step "
          f"{first - 1}; training stopped (max_skipped_steps="
          f"{self.max_skipped}). {kept}")


def _evaluates(step: int, config: LoopConfig, evaluate_fn) -> bool:
  """Whether `step` writes a periodic evaluation (eval/step_<step>.json)."""
  return bool(evaluate_fn and config.eval_every and (
      step % config.eval_every == 0) and step != config.steps)


def _evaluate(name: str, step: int, params, evaluate_fn,
              loggers: loggers_lib.Loggers | None) -> None:
  """Evaluates; `loggers` (the first process's) write eval/<name>.json."""
  results = evaluate_fn(params)  # every process, the same metrics
  metrics, samples = results if isinstance(results, tuple) else (results, {})
  if loggers is not None:
    loggers.evaluation(name, step, metrics, samples)


class _MetricsLog:
  """The metrics lines of a run: `<workdir>/metrics.jsonl`, or with a
  splitter one file per part, `<workdir>/<part>/metrics.jsonl`."""

  def __init__(self, workdir: pathlib.Path, resume_step: int,
               split: MetricsSplitter | None, write: bool):
    self._workdir, self._resume_step = workdir, resume_step
    self._split, self._write = split, write
    self._writers = {}

  def log(self, step: int, values: dict[str, Any],
          loggers: loggers_lib.Loggers | None = None) -> dict[str, float]:
    """Writes one step; returns the metrics of the first part (for show).

    `loggers` (TensorBoard, W&B) get every part's metrics, a part's keys
    prefixed with `<part>/`.
    """
    if self._split is None:
      parts = {"": checkpointing.to_python(values)}
    else:
      parts = self._split(jax.device_get(values))
    if loggers is not None and self._write:
      loggers.scalars(step, {f"{part}/{key}" if part else key: value
                             for part, metrics in parts.items()
                             for key, value in metrics.items()})
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
          split_metrics: MetricsSplitter | None = None,
          loggers: loggers_lib.Loggers | None = None
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
    evaluate_fn: `evaluate_fn(student_params) -> {"greedy": {...}, ...}`,
      or a pair (those metrics, {"greedy": [sample records], ...}) as
      `gkdrl.evaluation.evaluate_with_samples` returns; with a mesh, called on every process with the sharded parameters
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
    loggers: where evaluations and, besides metrics.jsonl, the metrics go
      (TensorBoard, W&B; process 0 only); None makes them from
      `config.log_to` (and closes them at the end).

  Returns:
    The final training state.

  Raises:
    TrainingDivergedError: on a NaN or Inf loss, naming the step, or after
      `max_skipped_steps` skipped updates in a row; nothing is saved after
      it, so the last checkpoint stays good.
    ValueError: a checkpoint past `config.steps`, or one that does not fit
      `state` (`checkpointing.CheckpointMismatchError`).
    workdir.WorkdirLockedError: another process trains in `workdir`.
  """
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  with workdir_lib.Lock(workdir):
    return _train(agent=agent, state=state, task=task, config=config,
                  workdir=workdir, teacher_params=teacher_params,
                  reward_params=reward_params, evaluate_fn=evaluate_fn,
                  mesh=mesh, split_metrics=split_metrics, loggers=loggers)


def _train(*, agent, state, task, config, workdir, teacher_params,
           reward_params, evaluate_fn, mesh, split_metrics, loggers):
  """`train`'s body, run while holding the workdir's lock."""
  checkpointer = checkpointing.Checkpointer(workdir)
  if mesh is not None:
    state = parallel.shard_state(state, mesh)
    teacher_params = (None if teacher_params is None
                      else parallel.shard_params(teacher_params, mesh))
  target = state if mesh is None else parallel.abstract_like(
      state, parallel.state_shardings(state, mesh))
  start, restored = checkpointer.restore_newest_intact(target)
  if start:
    state = restored
    logging.info("Resumed from the checkpoint of step %d in %s.", start,
                 checkpointer.directory)
  workdir_lib.check_steps(start, config.steps, checkpointer.directory)
  # Processes of a multi-host run share the workdir: only the first writes
  # metrics lines (orbax coordinates the checkpoints itself).
  lead = jax.process_index() == 0
  metrics_log = _MetricsLog(workdir, start, split_metrics, write=lead)
  own_loggers = lead and loggers is None
  if own_loggers:
    loggers = loggers_lib.make_loggers(config.log_to, workdir,
                                       resume_step=start)
  if not lead:
    loggers = None
  if start and _evaluates(start, config, evaluate_fn) and not (
      workdir / "eval" / f"step_{start}.json").exists():
    # A kill between the save and the evaluation of this step lost it.
    _evaluate(f"step_{start}", start,
              agent.model_params(state), evaluate_fn, loggers)
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
  rollouts = rollouts_lib.Rollouts(
      agent, batches, root_key=root_key, ahead=config.async_rollouts,
      mesh=mesh, task=task, teacher_params=teacher_params,
      reward_params=reward_params)
  bar = tqdm.tqdm(total=config.steps, initial=start, desc=agent.name,
                  disable=not (config.progress and lead),
                  dynamic_ncols=True)
  last_saved = start
  check = _StepCheck(config.max_skipped_steps, checkpointer.directory)
  unchecked = []  # (step, loss, skipped) of the updates not read yet
  try:
    for step in range(start + 1, config.steps + 1):
      _, update_key = rollouts_lib.step_keys(root_key, step)
      batch, info = rollouts.get(step, state)
      rollouts.start_next(step, state, config.steps)
      state, metrics = update(state, batch, teacher_params, update_key)
      rollouts.prefetch()
      unchecked.append((step, metrics["loss/total"],
                        metrics.get("train/skipped")))
      log = step % config.log_every == 0 or step == config.steps
      save = step % config.save_every == 0 or step == config.steps
      evaluate = _evaluates(step, config, evaluate_fn)
      if log or save or evaluate:
        check.check_all(unchecked, last_saved)
      if log:
        shown = metrics_log.log(step, {**metrics, **info}, loggers)
        bar.set_postfix(_postfix(shown), refresh=False)
      bar.update(1)
      if save:
        checkpointer.save(step, state)
        last_saved = step
      if evaluate:
        _evaluate(f"step_{step}", step,
              agent.model_params(state), evaluate_fn, loggers)
  finally:
    rollouts.close()
    bar.close()
    checkpointer.close()
  if evaluate_fn:
    _evaluate("final", config.steps,
              agent.model_params(state), evaluate_fn, loggers)
  if own_loggers:
    loggers.close()
  if jax.process_count() > 1:
    # The others may read what the first wrote once `train` returns.
    multihost_utils.sync_global_devices("gkdrl.runners.loop.train")
  return state
