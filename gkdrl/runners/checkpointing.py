"""Resumable training state on disk: orbax checkpoints and metrics lines.

Orbax writes each checkpoint into a temporary directory and renames it when
complete, so a kill at any moment leaves the previous checkpoint loadable.

A checkpoint damaged afterwards (a truncated file, unreadable metadata, an
empty step directory) is skipped on resume with a warning naming it and the
reason, and moved aside to `checkpoints/<step>.corrupt-<n>` (never deleted),
so the resumed run can save that step again; the run resumes from the newest
intact checkpoint.
"""

import json
import os
import pathlib
import sys
import time
from typing import Any

from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np
import orbax.checkpoint as ocp

from gkdrl import validation
from gkdrl.networks import lora

_METADATA = "_CHECKPOINT_METADATA"


class CheckpointMismatchError(ValueError):
  """A checkpoint is readable but does not fit the state it restores into."""


def warn(message: str) -> None:
  """An absl warning, also printed to stderr if warnings are not logged.

  absl writes warnings to stderr (under `app.run`, and through Python's
  last-resort handler otherwise), so the line is printed only when a
  `--verbosity` below warnings would hide it.
  """
  logging.warning("%s", message)
  if not logging.level_warning():
    print(f"warning: {message}", file=sys.stderr)


def _quiet_abandoned_reads() -> None:
  """Drops the reports of a failed restore's abandoned reads.

  When one array of a checkpoint fails to read (a damaged file, or a
  target of other shapes), orbax closes its event loop while the other
  reads still finish; each then reports "Event loop is closed" (a
  RuntimeError) as an unraisable exception. A read that had not finished
  is closed when it is garbage-collected, later and anywhere in the
  process, and reports orbax's "Encountered error while reading array
  index" raised from the GeneratorExit of that close. Either is a
  traceback per array that would bury the one warning that matters.
  Installed once per process; every other unraisable exception still
  reaches the previous hook.
  """
  previous = sys.unraisablehook
  if getattr(previous, "gkdrl_quiet_reads", False):
    return

  def hook(unraisable):
    error = unraisable.exc_value
    closed_loop = (isinstance(error, RuntimeError) and
                   str(error) == "Event loop is closed")
    collected_read = (
        isinstance(getattr(error, "__cause__", None), GeneratorExit) and
        str(error).startswith("Encountered error while reading array index"))
    if not (closed_loop or collected_read):
      previous(unraisable)

  hook.gkdrl_quiet_reads = True
  sys.unraisablehook = hook


def saved_steps(workdir: str | os.PathLike) -> list[int]:
  """Steps with a directory under `<workdir>/checkpoints`, without orbax."""
  directory = pathlib.Path(workdir) / "checkpoints"
  if not directory.is_dir():
    return []
  return sorted(int(p.name) for p in directory.iterdir()
                if p.is_dir() and p.name.isdigit())


class Checkpointer:
  """Saves and restores a training-state pytree under `<workdir>/checkpoints`.

  Args:
    workdir: the run's directory.
    max_to_keep: checkpoints kept (oldest deleted first).
  """

  def __init__(self, workdir: str | os.PathLike, *, max_to_keep: int = 2):
    self.directory = pathlib.Path(workdir).absolute() / "checkpoints"
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep,
                                             create=True))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def save(self, step: int, state: Any) -> None:
    """Writes `state` as checkpoint `step` and waits until it is complete."""
    self._manager.save(step, args=ocp.args.StandardSave(state), force=True)
    self._manager.wait_until_finished()

  def restore(self, target: Any, step: int | None = None) -> Any:
    """Restores checkpoint `step` (default: latest) into `target`'s shape."""
    step = self.latest_step() if step is None else step
    abstract = jax.tree.map(
        lambda x: x if isinstance(x, jax.ShapeDtypeStruct)
        else ocp.utils.to_shape_dtype_struct(x), target)
    return self._manager.restore(step,
                                 args=ocp.args.StandardRestore(abstract))

  def restore_newest_intact(self, target: Any) -> tuple[int, Any]:
    """`(step, state)` of the newest checkpoint that restores into `target`.

    Damaged checkpoints newer than it are skipped with a warning and moved
    aside (`set_aside`); with none intact, returns `(0, target)`.

    Raises:
      CheckpointMismatchError: a checkpoint is intact but holds another
        structure, shapes or dtypes than `target` (another agent or model).
    """
    _quiet_abandoned_reads()
    for step in reversed(self.all_steps()):
      try:
        _check_metadata(self.directory / str(step))
        return step, self.restore(target, step)
      except Exception as error:  # pylint: disable=broad-except
        reason = _reason(error)
        if _readable(self._manager, step):
          raise CheckpointMismatchError(
              f"Checkpoint {step} in {self.directory} does not fit this "
              f"run's training state ({reason}); it was written with other "
              "settings (agent, model or param_dtype). Use another workdir, "
              "or start a new run there.") from error
      moved = self.set_aside(step)
      warn(f"Skipped checkpoint {step}: it is damaged ({reason}); moved to "
           f"{moved}, resuming from an older one.")
    return 0, target

  def set_aside(self, step: int) -> pathlib.Path:
    """Renames checkpoint `step` to `<step>.corrupt-<n>` (first free n)."""
    source = self.directory / str(step)
    n = 0
    while (self.directory / f"{step}.corrupt-{n}").exists():
      n += 1
    destination = self.directory / f"{step}.corrupt-{n}"
    if jax.process_index() == 0:
      os.rename(source, destination)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f"gkdrl set_aside {step}")
    self._manager.reload()
    return destination

  def restore_params(self, step: int | None = None, *,
                     lora_alpha: float | None = None) -> Any:
    """The student parameters of checkpoint `step` (default: newest intact).

    A LoRA run's checkpoint (adapters on a frozen base) gives the base
    merged with the adapters, scaled by `lora_alpha` / their rank.

    Raises:
      FileNotFoundError: no such step, naming the saved ones.
      ValueError: a LoRA checkpoint without `lora_alpha`.
    """
    steps = self.all_steps()
    if step is not None and step not in steps:
      raise FileNotFoundError(
          f"No checkpoint of step {step} in {self.directory}; saved steps: "
          f"{', '.join(map(str, steps)) or 'none'}.")
    _quiet_abandoned_reads()
    for candidate in reversed(steps) if step is None else [step]:
      try:
        _check_metadata(self.directory / str(candidate))
        restored = self._manager.restore(candidate,
                                         args=ocp.args.StandardRestore())
      except Exception as error:  # pylint: disable=broad-except
        message = (f"Checkpoint {candidate} in {self.directory} is damaged "
                   f"({_reason(error)})")
        if step is not None:
          raise ValueError(f"{message}.") from error
        warn(f"{message}; trying an older one.")
      else:
        return _model_params(restored, lora_alpha)
    raise FileNotFoundError(f"No intact checkpoint in {self.directory}; "
                            f"saved steps: {steps or 'none'}.")

  def close(self) -> None:
    self._manager.close()


def _model_params(restored: dict, lora_alpha: float | None) -> Any:
  """The student parameters of a restored state (LoRA merged)."""
  if restored.get("frozen") is None:
    return restored["params"]
  if lora_alpha is None:
    validation.fail("lora_alpha", lora_alpha,
                    "the LoRA alpha of the run, to merge the checkpoint's "
                    "adapters")
  adapters = restored["params"]
  rank = next(iter(adapters.values()))["a"].shape[-1]  # a: [N, D_in, r]
  return lora.merge(restored["frozen"], adapters, alpha=lora_alpha,
                    rank=rank)


def _check_metadata(step_dir: pathlib.Path) -> None:
  """Raises ValueError if the step's orbax metadata is missing or not JSON.

  Orbax itself only logs an unreadable metadata file, but such a checkpoint
  was not written whole, so it is not trusted.
  """
  path = step_dir / _METADATA
  try:
    json.loads(path.read_text())
  except FileNotFoundError:
    raise ValueError(f"{path.name} is missing") from None
  except (ValueError, UnicodeDecodeError) as error:
    raise ValueError(f"{path.name} is not valid JSON: {error}") from None


def _readable(manager, step: int) -> bool:
  """Whether checkpoint `step` restores without a target (as saved)."""
  try:
    _check_metadata(pathlib.Path(manager.directory) / str(step))
    manager.restore(step, args=ocp.args.StandardRestore())
  except Exception:  # pylint: disable=broad-except
    return False
  return True


def _reason(error: Exception) -> str:
  """The first line of an error, shortened (orbax errors run long)."""
  lines = str(error).strip().splitlines() or [type(error).__name__]
  line = lines[0]
  return f"{type(error).__name__}: {line[:300]}"


def to_python(metrics: dict[str, Any]) -> dict[str, float]:
  """Device or NumPy scalars to floats (one host transfer for all)."""
  values = jax.device_get(metrics)
  return {k: float(np.asarray(v)) for k, v in values.items()}


class MetricsWriter:
  """Appends one JSON object per logged step to `<workdir>/metrics.jsonl`.

  Each object holds "step", "time" (seconds since the epoch, when written)
  and the step's metrics.

  On resume, lines of steps after the restored checkpoint are dropped, so
  the file holds each step once.
  """

  def __init__(self, workdir: str | os.PathLike, *, resume_step: int = 0):
    self.path = pathlib.Path(workdir) / "metrics.jsonl"
    if self.path.exists():
      kept = []
      for line in self.path.read_text().splitlines():
        try:
          record = json.loads(line)
        except json.JSONDecodeError:
          continue  # a line cut by a kill
        if int(record.get("step", -1)) <= resume_step:
          kept.append(line)
      self.path.write_text("".join(f"{line}\n" for line in kept))

  def write(self, step: int, metrics: dict[str, float]) -> None:
    # The wall clock lets readers time steps (e.g. sampling versus fixed
    # data) without a timer in the loop.
    record = {"step": int(step), "time": time.time(), **metrics}
    with self.path.open("a") as f:
      f.write(json.dumps(record) + "\n")


def write_json(path: str | os.PathLike, value: Any) -> None:
  """Writes JSON atomically (temporary file, then rename)."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_suffix(path.suffix + ".tmp")
  tmp.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n")
  os.replace(tmp, path)


def read_json(path: str | os.PathLike) -> Any:
  return json.loads(pathlib.Path(path).read_text())
