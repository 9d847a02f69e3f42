"""One run per workdir: a lock file, and resume rules for a rerun.

    with workdir.Lock(path):          # <path>/.lock holds {"pid", "host"}
      workdir.check_resume(old_config, new_config)   # refuses a changed run

A second process on a locked workdir is refused with the first one's PID
and host. A lock left by a process that died (a kill -9, a crash) is stale:
its PID no longer runs on this host, and the next run takes it over with a
warning. The lock is re-entrant within a process (`train.run` holds it
around `loop.train`, which takes it too). In a multi-host run only process
0 takes it: the processes of one run share the workdir.

A rerun resumes the checkpoints only with the settings that wrote them.
`SAFE_TO_CHANGE` lists the settings that may differ (they change how long
the run lasts, what is logged, evaluated or saved, and where it runs, not
what the checkpoint holds); any other difference is refused, naming each
changed field as `field: old -> new`. `start_new_run` moves a previous run
aside (`<workdir>/previous_run_<n>/`) instead.
"""

import json
import os
import pathlib
import socket
from typing import Any

import jax
from jax.experimental import multihost_utils

from gkdrl import validation
from gkdrl.runners import checkpointing

LOCK_NAME = ".lock"
# Flag values a resume may change. "steps" also changes the learning-rate
# schedule's decay length (agent_config.optimizer.decay_steps), which is
# recomputed from the resumed step on.
SAFE_TO_CHANGE = frozenset({
    "steps", "agent_config.optimizer.decay_steps", "log_every",
    "eval_every", "save_every", "eval_examples", "eval_samples_per_prompt",
    "mesh", "workdir", "force_new_run", "cache_dir", "log_to",
    "compilation_cache", "cpu_scratch_reuse"})
# What a previous run leaves in its workdir (moved by `start_new_run`).
RUN_OUTPUTS = ("config.json", "metrics.jsonl", "checkpoints", "eval",
               "student_hf", "plots.png", "tensorboard", "wandb")

_held: dict[pathlib.Path, int] = {}  # lock path -> depth, in this process


class WorkdirLockedError(RuntimeError):
  """Another live process holds the workdir's lock."""


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # another user's process
    return True
  return True


class Lock:
  """`<workdir>/.lock` while a run writes into `workdir` (a context manager).

  Args:
    workdir: the run directory (created if missing).
  """

  def __init__(self, workdir: str | os.PathLike):
    self.path = (pathlib.Path(workdir) / LOCK_NAME).absolute()
    self._owner = {"pid": os.getpid(), "host": socket.gethostname()}
    self._active = jax.process_index() == 0

  def __enter__(self) -> "Lock":
    if not self._active:
      return self
    if self.path in _held:
      _held[self.path] += 1
      return self
    self.path.parent.mkdir(parents=True, exist_ok=True)
    while not self._create():
      holder = self._read()
      if self._is_live(holder):
        raise WorkdirLockedError(
            f"{self.path.parent} is in use by process {holder.get('pid')} on "
            f"host {holder.get('host')!r} (lock file {self.path}). Wait for "
            "it to finish or use another --workdir; if that process is gone, "
            "delete the lock file.")
      checkpointing.warn(
          f"Taking over the stale lock {self.path} of process "
          f"{holder.get('pid')} on host {holder.get('host')!r}, which is no "
          "longer running (it stopped without releasing it).")
      self._remove_if(holder)
    _held[self.path] = 1
    return self

  def __exit__(self, *exc_info) -> None:
    if not self._active or self.path not in _held:
      return
    _held[self.path] -= 1
    if not _held[self.path]:
      del _held[self.path]
      self._remove_if(self._owner)

  def _create(self) -> bool:
    """Creates the lock whole (a complete temporary file, hard-linked)."""
    tmp = self.path.with_name(f"{LOCK_NAME}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(self._owner))
    try:
      os.link(tmp, self.path)  # fails if the lock exists
      return True
    except FileExistsError:
      return False
    finally:
      tmp.unlink()

  def _read(self) -> dict[str, Any]:
    try:
      holder = json.loads(self.path.read_text())
      return holder if isinstance(holder, dict) else {}
    except FileNotFoundError:
      return {"released": True}
    except (ValueError, UnicodeDecodeError):
      return {}  # unreadable: treated as stale

  def _is_live(self, holder: dict[str, Any]) -> bool:
    if holder.get("released"):
      return False
    pid, host = holder.get("pid"), holder.get("host")
    if not isinstance(pid, int):
      return False
    if host != self._owner["host"]:
      return True  # cannot tell whether a process on another host runs
    if pid == os.getpid():
      return False  # a previous process with this PID (not held here)
    return _alive(pid)

  def _remove_if(self, holder: dict[str, Any]) -> None:
    """Removes the lock if it still holds `holder` (not a newer owner's)."""
    if self._read() == holder or holder.get("released") or not holder:
      try:
        self.path.unlink()
      except FileNotFoundError:
        pass


def _flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
  flat = {}
  for key, value in config.items():
    if isinstance(value, dict):
      flat.update(_flatten(value, f"{prefix}{key}."))
    else:
      flat[f"{prefix}{key}"] = value
  return flat


def config_differences(old: dict[str, Any], new: dict[str, Any],
                       defaults: dict[str, Any] | None = None) -> list[str]:
  """`field: old -> new` for each setting outside SAFE_TO_CHANGE that differs.

  Both are JSON-like dicts (nested dicts are compared field by field). A
  field missing from `old` (a setting added after that run was made) takes
  its value in `defaults`, the settings' defaults, where that has it: the
  run used the behaviour the default keeps. Otherwise a missing field
  counts as None.
  """
  # Round-trip through JSON so tuples equal lists, as config.json holds them.
  old = _flatten(json.loads(json.dumps(old)))
  new = _flatten(json.loads(json.dumps(new)))
  defaults = _flatten(json.loads(json.dumps(defaults or {})))
  old.update({k: v for k, v in defaults.items() if k not in old and k in new})
  return [f"{key}: {old.get(key)!r} -> {new.get(key)!r}"
          for key in sorted(set(old) | set(new))
          if key not in SAFE_TO_CHANGE and old.get(key) != new.get(key)]


def _safe_flags() -> list[str]:
  return sorted(k for k in SAFE_TO_CHANGE
                if "." not in k and k != "force_new_run")


def check_resume(workdir: str | os.PathLike, config: dict[str, Any],
                 defaults: dict[str, Any] | None = None) -> None:
  """Refuses to resume `workdir`'s checkpoints under a changed `config`.

  `defaults` (as in `config_differences`) fills settings that an older
  config.json lacks.

  Does nothing without checkpoints (nothing to resume) or without a
  `config.json` (a run made by `loop.train` alone).

  Raises:
    ValueError: naming every changed setting, or an unreadable config.json.
  """
  workdir = pathlib.Path(workdir)
  path = workdir / "config.json"
  steps = checkpointing.saved_steps(workdir)
  if not steps or not path.exists():
    return
  try:
    old = json.loads(path.read_text())
  except (ValueError, UnicodeDecodeError) as error:
    raise ValueError(f"{path} is not valid JSON ({error}), so a resume "
                     "cannot be checked; pass --force_new_run to start "
                     "over.") from None
  changes = config_differences(old, config, defaults)
  if changes:
    raise ValueError(
        f"--workdir={str(workdir)!r} holds checkpoints (step {steps[-1]}) "
        f"of a run with other settings:\n  " + "\n  ".join(changes) +
        "\nResume with the same settings (only "
        f"{', '.join(_safe_flags())} may change), use another --workdir, or "
        "pass --force_new_run to move that run aside and start over.")


def check_steps(saved_step: int, steps: int, directory) -> None:
  """Refuses to resume a checkpoint past the run's last step."""
  if saved_step > steps:
    validation.fail(
        "steps", steps,
        f"the checkpoint in {directory} is already at step {saved_step}, "
        f"so a resume needs steps >= {saved_step} (or start a new run: "
        "--force_new_run, or another workdir)")


def prepare(workdir: str | os.PathLike, config: dict[str, Any], *,
            steps: int, force_new_run: bool = False,
            defaults: dict[str, Any] | None = None) -> None:
  """Makes `workdir` ready for a run of `config`, under its `Lock`.

  Moves a previous run aside if `force_new_run`, else refuses a resume
  under changed settings (`check_resume`) or past `steps` (`check_steps`).
  """
  if force_new_run:
    start_new_run(workdir)
  check_resume(workdir, config, defaults)
  saved = checkpointing.saved_steps(workdir)
  check_steps(saved[-1] if saved else 0, steps,
              pathlib.Path(workdir) / "checkpoints")


def start_new_run(workdir: str | os.PathLike) -> pathlib.Path | None:
  """Moves a previous run's outputs into `<workdir>/previous_run_<n>/`.

  Returns the new directory, or None if there was nothing to move.
  Other files in `workdir` stay where they are.
  """
  workdir = pathlib.Path(workdir)
  present = [name for name in RUN_OUTPUTS if (workdir / name).exists()]
  if not present:
    return None
  n = 1
  while (workdir / f"previous_run_{n}").exists():
    n += 1
  destination = workdir / f"previous_run_{n}"
  if jax.process_index() == 0:
    destination.mkdir()
    for name in present:
      os.rename(workdir / name, destination / name)
    checkpointing.warn(f"--force_new_run: moved the previous run in "
                       f"{workdir} ({', '.join(present)}) to {destination}.")
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices("gkdrl start_new_run")
  return destination
