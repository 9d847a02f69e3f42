"""Where a run's metrics and evaluations go: files, TensorBoard, W&B.

    loggers = make_loggers(("jsonl", "tensorboard"), workdir,
                           run_config=resolved, resume_step=0)
    loggers.scalars(step, {"loss/total": 0.3, ...})
    loggers.evaluation("step_100", 100, metrics, samples)
    loggers.close()

`jsonl` is always on. It writes
  eval/<name>.json              {"step": N, <mode>: {<metric>: float}}
  eval/samples_<name>.jsonl     a few completions per mode, one per line
where <name> is `teacher`, `initial`, `step_<N>` or `final` (the training
loop writes the metrics lines, metrics.jsonl, itself).
`tensorboard` writes event files into `<workdir>/tensorboard/` with
tensorboardX (no TensorFlow): the logged scalars under their own names,
evaluations as `eval/<mode>/<metric>` (the teacher's as
`teacher/<mode>/<metric>`) and the samples as a Markdown table in the Text
panel (`samples/<mode>`, `samples_teacher/<mode>`). `wandb` logs the same
to Weights & Biases (samples as a `wandb.Table`), with the run's resolved
configuration; set WANDB_MODE=offline to log without a network, and
WANDB_PROJECT to pick the project (default "gkdrl"). Its files go under
`<workdir>/wandb/`, and a resumed run continues the same W&B run.
"""

from collections.abc import Mapping, Sequence
import importlib.util
import os
import pathlib
import time
import uuid
from typing import Any

from gkdrl import validation
from gkdrl.evaluation import samples as samples_lib
from gkdrl.runners import checkpointing

LOG_TO = ("jsonl", "tensorboard", "wandb")
REFERENCE = "teacher"  # an evaluation beside the run, not a point of it


def parse_log_to(value: str | Sequence[str] | None) -> tuple[str, ...]:
  """The loggers of a comma list (or sequence), `jsonl` first and always.

  Raises:
    ValueError: on an unknown name, or `wandb` without the wandb package.
  """
  if value is None:
    value = ()
  names = value.split(",") if isinstance(value, str) else list(value)
  chosen = ["jsonl"]
  for name in names:
    name = name.strip() if isinstance(name, str) else name
    if name == "":
      continue
    validation.check_choice("log_to", name, LOG_TO)
    if name not in chosen:
      chosen.append(name)
  if "wandb" in chosen and importlib.util.find_spec("wandb") is None:
    validation.fail("log_to", "wandb",
                    "it needs the wandb package: pip install wandb (or "
                    "pip install -e '.[wandb]'); the other loggers are "
                    f"{', '.join(repr(n) for n in LOG_TO if n != 'wandb')}")
  return tuple(chosen)


def _eval_scalars(name: str, metrics: Mapping[str, Mapping[str, float]]
                  ) -> dict[str, float]:
  prefix = "teacher" if name == REFERENCE else "eval"
  return {f"{prefix}/{mode}/{key}": float(value)
          for mode, values in metrics.items() for key, value in values.items()}


def _samples_tag(name: str, mode: str) -> str:
  return f"samples_teacher/{mode}" if name == REFERENCE else f"samples/{mode}"


class JsonlLogger:
  """eval/<name>.json and eval/samples_<name>.jsonl.

  Metrics lines go to metrics.jsonl through `checkpointing.MetricsWriter`,
  which the training loop owns (one file per part of a stacked agent).
  """

  def __init__(self, workdir: pathlib.Path):
    self._workdir = workdir

  def scalars(self, step: int, values: Mapping[str, float]) -> None:
    del step, values  # written by the loop's MetricsWriter

  def evaluation(self, name: str, step: int, metrics, samples) -> None:
    checkpointing.write_json(self._workdir / "eval" / f"{name}.json",
                             {"step": int(step), **metrics})
    if samples:
      samples_lib.write_jsonl(
          self._workdir / "eval" / f"samples_{name}.jsonl", samples)

  def close(self) -> None:
    pass


class TensorBoardLogger:
  """Event files in `<workdir>/tensorboard/`, written with tensorboardX.

  On resume, TensorBoard drops the events of steps after `resume_step`
  written by the interrupted run (tensorboardX's `purge_step`).
  """

  def __init__(self, workdir: pathlib.Path, *, resume_step: int = 0):
    import tensorboardX  # pylint: disable=g-import-not-at-top
    self.directory = workdir / "tensorboard"
    # tensorboardX names files by the second: a unique suffix keeps a
    # writer from overwriting the file of one opened in the same second.
    self._writer = tensorboardX.SummaryWriter(
        str(self.directory),
        purge_step=resume_step + 1 if resume_step else None,
        filename_suffix=f".{os.getpid()}.{time.time_ns()}")

  def scalars(self, step: int, values: Mapping[str, float]) -> None:
    for key, value in values.items():
      self._writer.add_scalar(key, value, global_step=step)
    self._writer.flush()

  def evaluation(self, name: str, step: int, metrics, samples) -> None:
    self.scalars(step, _eval_scalars(name, metrics))
    for mode, records in (samples or {}).items():
      if records:
        self._writer.add_text(_samples_tag(name, mode),
                              samples_lib.to_markdown(records),
                              global_step=step)
    self._writer.flush()

  def close(self) -> None:
    self._writer.close()


class WandbLogger:
  """One W&B run per workdir (its id is kept in `<workdir>/wandb/run_id`)."""

  def __init__(self, workdir: pathlib.Path, *,
               run_config: Mapping[str, Any] | None = None):
    import wandb  # pylint: disable=g-import-not-at-top
    self._wandb = wandb
    directory = workdir / "wandb"
    directory.mkdir(parents=True, exist_ok=True)
    id_file = directory / "run_id"
    if id_file.exists():
      run_id = id_file.read_text().strip()
    else:
      run_id = uuid.uuid4().hex[:12]
      id_file.write_text(run_id + "\n")
    self.run = wandb.init(
        project=os.environ.get("WANDB_PROJECT", "gkdrl"), dir=str(workdir),
        name=workdir.absolute().name, id=run_id, resume="allow",
        config=dict(run_config or {}))

  def scalars(self, step: int, values: Mapping[str, float]) -> None:
    self.run.log(dict(values), step=step)

  def evaluation(self, name: str, step: int, metrics, samples) -> None:
    logged = _eval_scalars(name, metrics)
    for mode, records in (samples or {}).items():
      if records:
        columns = [k for k in samples_lib.SAMPLE_KEYS if k in records[0]]
        logged[_samples_tag(name, mode)] = self._wandb.Table(
            columns=columns, data=[[r[c] for c in columns] for r in records])
    self.run.log(logged, step=step)

  def close(self) -> None:
    self.run.finish()


class Loggers:
  """Sends every call to each of the chosen loggers."""

  def __init__(self, loggers: Sequence[Any]):
    self.loggers = tuple(loggers)

  def scalars(self, step: int, values: Mapping[str, float]) -> None:
    for logger in self.loggers:
      logger.scalars(step, values)

  def evaluation(self, name: str, step: int,
                 metrics: Mapping[str, Mapping[str, float]],
                 samples: samples_lib.Samples | None = None) -> None:
    """Logs an evaluation: `name` is teacher, initial, step_<N> or final."""
    for logger in self.loggers:
      logger.evaluation(name, step, metrics, samples)

  def close(self) -> None:
    for logger in self.loggers:
      logger.close()


def make_loggers(log_to: str | Sequence[str] | None,
                 workdir: str | os.PathLike, *,
                 run_config: Mapping[str, Any] | None = None,
                 resume_step: int = 0) -> Loggers:
  """The loggers named in `log_to` (see `parse_log_to`) for `workdir`.

  Args:
    log_to: comma list or sequence of `LOG_TO` names; jsonl is always on.
    workdir: the run directory.
    run_config: the resolved configuration W&B records.
    resume_step: the step a resumed run restarts after (0: a new run);
      TensorBoard drops the events of later steps.
  """
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  chosen = parse_log_to(log_to)
  loggers = [JsonlLogger(workdir)]
  if "tensorboard" in chosen:
    loggers.append(TensorBoardLogger(workdir, resume_step=resume_step))
  if "wandb" in chosen:
    loggers.append(WandbLogger(workdir, run_config=run_config))
  return Loggers(loggers)
