"""Resumable training state on disk: orbax checkpoints and metrics lines.

Orbax writes each checkpoint into a temporary directory and renames it when
complete, so a kill at any moment leaves the previous checkpoint loadable.
"""

import json
import os
import pathlib
import time
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp


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

  def restore_params(self, step: int | None = None) -> Any:
    """The student parameters of checkpoint `step` (default: latest)."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"No checkpoint in {self.directory}.")
    restored = self._manager.restore(step, args=ocp.args.StandardRestore())
    return restored["params"]

  def close(self) -> None:
    self._manager.close()


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
