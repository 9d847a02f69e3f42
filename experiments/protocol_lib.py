"""The fair protocol's pieces, shared by `protocol` and `ablation`.

`Protocol` holds the settings; `Context` prepares the study's SFT pair
(`early_stopping`) and trains or reads back runs through `common.Runner`,
with their test-split evaluations; the rest selects learning rates on
validation, aggregates, plots and writes Markdown.
"""

import dataclasses
import json
import pathlib
from typing import Any

import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

from experiments import common  # pylint: disable=g-import-not-at-top
from experiments import early_stopping  # pylint: disable=g-import-not-at-top
from gkdrl import evaluation  # pylint: disable=g-import-not-at-top
from gkdrl import networks  # pylint: disable=g-import-not-at-top
from gkdrl import validation  # pylint: disable=g-import-not-at-top
from gkdrl.runners import builtin  # pylint: disable=g-import-not-at-top
from gkdrl.runners import checkpointing  # pylint: disable=g-import-not-at-top
from gkdrl.runners import setup  # pylint: disable=g-import-not-at-top

MODES = ("greedy", "sample")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Protocol:
  """The fair protocol's settings.

  Attributes:
    teacher, student: the study's pair (SFT with early stopping).
    small_student: the one-layer student of the capacity ablation.
    stopping: the early-stopping rule of all three SFT runs; its first
      snapshot step is the ablation's unconverged start.
    steps: training steps of every method; batch_size: prompts per step.
    learning_rates: the grid each method is tuned on (validation, seed 0).
    seeds: seeds of the chosen rates for the methods that train on fixed
      data (SFT, supervised KD).
    sampling_seeds: how many of `seeds` the methods that sample (SeqKD,
      on-policy GKD), which cost more, run.
    ablation_seeds: the ablation's seeds, the first of `seeds`.
    eval_every: steps between validation evaluations (the curves).
    val_examples: validation prompts per evaluation (curves, LR choice);
      these evaluations draw one temperature-1 sample per prompt.
    test_examples: test prompts of the final evaluation.
    samples_per_prompt: temperature-1 samples per prompt on test.
    quick: tiny settings for tests (results mean nothing).
  """

  teacher: builtin.BuiltinSpec
  student: builtin.BuiltinSpec
  small_student: builtin.BuiltinSpec
  stopping: early_stopping.EarlyStopping
  steps: int
  batch_size: int
  learning_rates: tuple[float, ...]
  seeds: tuple[int, ...]
  sampling_seeds: int
  ablation_seeds: tuple[int, ...]
  eval_every: int
  val_examples: int
  test_examples: int
  samples_per_prompt: int
  quick: bool = False

  def __post_init__(self):
    for name in ("steps", "batch_size", "eval_every", "val_examples",
                 "test_examples", "samples_per_prompt"):
      validation.check_int(name, getattr(self, name), 1)
    if not self.learning_rates or min(self.learning_rates) <= 0:
      validation.fail("learning_rates", self.learning_rates,
                      "a non-empty tuple of positive rates")
    if not self.seeds or len(set(self.seeds)) != len(self.seeds):
      validation.fail("seeds", self.seeds, "distinct seeds, at least one")
    validation.check_int("sampling_seeds", self.sampling_seeds, 1,
                         len(self.seeds))
    if (len(self.ablation_seeds) > self.sampling_seeds
        or self.ablation_seeds != self.seeds[:len(self.ablation_seeds)]):
      validation.fail("ablation_seeds", self.ablation_seeds,
                      f"the first {self.sampling_seeds} or fewer of "
                      f"seeds={self.seeds}")
    if not self.stopping.snapshot_steps:
      validation.fail("stopping.snapshot_steps", (),
                      "one step at least (the unconverged start)")


def _spec(d_model, n_layers, d_ff, lr, heads=4, kv=2, steps=1500, batch=32):
  return builtin.BuiltinSpec(d_model=d_model, n_layers=n_layers,
                             n_heads=heads, n_kv_heads=kv, d_ff=d_ff,
                             sft_steps=steps, batch_size=batch,
                             learning_rate=lr)


FULL = Protocol(
    teacher=_spec(128, 2, 384, 2e-3), student=_spec(64, 2, 192, 3e-3),
    small_student=_spec(64, 1, 192, 3e-3),
    stopping=early_stopping.EarlyStopping(
        eval_every=100, patience=3, max_steps=1500, val_examples=256,
        snapshot_steps=(300,)),
    steps=300, batch_size=16, learning_rates=(3e-4, 1e-3, 3e-3),
    seeds=(0, 1, 2, 3, 4), sampling_seeds=5, ablation_seeds=(0, 1, 2),
    eval_every=150,
    val_examples=64, test_examples=256, samples_per_prompt=2)
# The quick teacher and student are shaped as the methods study's quick
# pair (common.QUICK_SPECS), so the programs compiled for its runs serve
# these too, from the studies' compilation cache; the ablation's smaller
# student is narrower.
QUICK = Protocol(
    teacher=_spec(16, 1, 32, 3e-3, 2, 1, 4, 4),
    student=_spec(8, 1, 16, 3e-3, 2, 1, 4, 4),
    small_student=_spec(8, 1, 8, 3e-3, 2, 1, 4, 4),
    stopping=early_stopping.EarlyStopping(
        eval_every=2, patience=1, max_steps=4, val_examples=8,
        snapshot_steps=(2,)),
    steps=2, batch_size=4, learning_rates=(1e-3,), seeds=(0,),
    sampling_seeds=1, ablation_seeds=(0,), eval_every=1, val_examples=4, test_examples=4,
    samples_per_prompt=1, quick=True)


def method_seeds(p: Protocol, settings: dict) -> tuple[int, ...]:
  """The seeds a method runs: all, or `sampling_seeds` if it samples."""
  if settings["agent"] in ("sft", "supervised_kd"):
    return p.seeds
  return p.seeds[:p.sampling_seeds]


def settings_dict(p: Protocol) -> dict[str, Any]:
  return json.loads(json.dumps(dataclasses.asdict(p), default=str))


class Context:
  """The study's task, SFT pair and runs under one --out."""

  def __init__(self, out: pathlib.Path, protocol: Protocol, task_name: str):
    self.out, self.protocol, self.task_name = out, protocol, task_name
    p = protocol
    self.task, _ = setup.make_task(task_name, seed=common.TASK_SEED)
    self.models_dir = out / "protocol-models"
    no_snapshots = dataclasses.replace(p.stopping, snapshot_steps=())
    self.sft = {
        "teacher": self._sft("teacher", p.teacher, no_snapshots),
        "student": self._sft("student", p.student, p.stopping)}
    self.runner = common.Runner(out, common.Budget(
        steps=p.steps, batch_size=p.batch_size,
        learning_rate=p.learning_rates[0], eval_examples=p.val_examples,
        eval_samples_per_prompt=1, seeds=p.seeds,
        quick=p.quick), model_paths={task_name: (
            self.sft["teacher"]["path"], self.sft["student"]["path"])})
    self._teacher = None

  def _sft(self, role, spec, stopping):
    return early_stopping.train_sft(self.task, self.task_name, role, spec,
                                    self.models_dir, stopping)

  def small_student(self) -> str:
    """The converged one-layer student (trained on first use)."""
    if "small student" not in self.sft:
      self.sft["small student"] = self._sft(
          "student", self.protocol.small_student, self.protocol.stopping)
    return self.sft["small student"]["path"]

  def unconverged_student(self) -> str:
    snapshots = self.sft["student"]["snapshots"]
    return snapshots[min(snapshots, key=int)]

  def train(self, label: str, seed: int, **settings) -> dict[str, Any]:
    """A run (common.Runner.train) of the study's pair, with curves.

    Its directory is named "protocol_<label>-..." apart from the other
    studies' runs of the built-in pair.
    """
    return self.runner.train(self.task_name, f"protocol {label}", seed,
                             eval_every=self.protocol.eval_every, **settings)

  def _teacher_model(self):
    if self._teacher is None:
      self._teacher = networks.from_pretrained(self.sft["teacher"]["path"])
    return self._teacher

  def evaluate_model(self, model_dir, seed: int, cache_path) -> dict:
    """Test-split evaluation of a model directory, cached at cache_path."""
    cache_path = pathlib.Path(cache_path)
    if cache_path.exists():
      return checkpointing.read_json(cache_path)
    p = self.protocol
    model, params = networks.from_pretrained(model_dir)
    teacher, teacher_params = self._teacher_model()
    result = evaluation.evaluate(
        model=model, params=params, task=self.task, split="test",
        num_examples=p.test_examples,
        max_new_tokens=self.task.max_target_tokens, teacher=teacher,
        teacher_params=teacher_params,
        reward=setup.make_reward("default", self.task),
        samples_per_prompt=p.samples_per_prompt, seed=seed)
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    checkpointing.write_json(cache_path, result)
    return result

  def test_eval(self, run: dict, seed: int) -> dict:
    workdir = pathlib.Path(run["workdir"])
    return self.evaluate_model(workdir / "student_hf", seed,
                               workdir / "eval" / "test.json")

  def reference_eval(self, name: str, model_dir, seed: int) -> dict:
    """Test evaluation of a start model or the teacher at a seed."""
    key = pathlib.Path(model_dir).name
    return self.evaluate_model(
        model_dir, seed, self.models_dir / "test" / f"{key}-seed{seed}.json")


def validation_score(run: dict) -> float:
  """A run's score for choosing its learning rate: the *validation*
  greedy reward of its final evaluation (train.run's `final`)."""
  return float(run["final"]["greedy"]["reward"])


def choose_learning_rate(runs_by_lr: dict[float, dict]) -> float:
  """The rate whose seed-0 run scores best on validation; ties: the
  first in grid order. Never reads a run's test evaluation."""
  return max(runs_by_lr, key=lambda lr: validation_score(runs_by_lr[lr]))


def stats_of(evals: list[dict]) -> dict:
  """mode -> metric -> common.summarize over a list of evaluations."""
  return {mode: {m: common.summarize([e[mode][m] for e in evals])
                 for m in common.METRICS if m in evals[0][mode]}
          for mode in MODES}


def test_stats(ctx: Context, runs: dict, student_dir=None,
               seeds=None) -> dict:
  """Test statistics of each method's runs, with Teacher and SFT start."""
  seeds = seeds or ctx.protocol.seeds
  student_dir = student_dir or ctx.sft["student"]["path"]
  stats = {
      "Teacher": stats_of([ctx.reference_eval(
          "Teacher", ctx.sft["teacher"]["path"], seeds[0])]),
      "SFT start": stats_of([ctx.reference_eval("SFT start", student_dir, s)
                             for s in seeds])}
  for label, label_runs in runs.items():
    stats[label] = stats_of([r["test"] for r in label_runs])
  return stats


def validation_curves(runs: list[dict], metric: str = "reward") -> dict:
  """Greedy validation `metric` against steps, mean and sd over runs."""
  per_run = []
  for run in runs:
    eval_dir = pathlib.Path(run["workdir"]) / "eval"
    points = {0: run["initial"]["greedy"][metric]}
    for path in eval_dir.glob("step_*.json"):
      record = checkpointing.read_json(path)
      points[record["step"]] = record["greedy"][metric]
    final = checkpointing.read_json(eval_dir / "final.json")
    points[final["step"]] = final["greedy"][metric]
    per_run.append(points)
  steps = sorted(per_run[0])
  values = [[points[s] for s in steps] for points in per_run]
  stats = [common.summarize(column) for column in zip(*values)]
  return {"steps": steps, "mean": [s["mean"] for s in stats],
          "std": [s["std"] for s in stats]}


def plot_curves(curves: dict, path) -> None:
  fig, ax = plt.subplots(figsize=(7, 4.2))
  for label, c in curves.items():
    mean, std = c["mean"], c["std"]
    ax.plot(c["steps"], mean, marker="o", ms=3, label=label)
    ax.fill_between(c["steps"], [m - s for m, s in zip(mean, std)],
                    [m + s for m, s in zip(mean, std)], alpha=0.15)
  ax.set_xlabel("training step")
  ax.set_ylabel("validation greedy reward")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
  common.save_figure(fig, path)


def plot_sft(sft: dict, path) -> None:
  fig, axes = plt.subplots(1, len(sft), figsize=(4.5 * len(sft), 3.6),
                           squeeze=False)
  for ax, (role, record) in zip(axes[0], sft.items()):
    for name, curve in record["curves"].items():
      ax.plot(*zip(*curve), label=f"{name} loss")
    ax.axvline(record["best_step"], color="k", ls="--", lw=0.8,
               label=f"kept: step {record['best_step']}")
    ax.set_title(role, fontsize=9)
    ax.set_xlabel("SFT step")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  common.save_figure(fig, path)


def param_count(model_dir) -> int:
  _, params = networks.from_pretrained(model_dir)
  return int(sum(x.size for x in jax.tree_util.tree_leaves(params)))
