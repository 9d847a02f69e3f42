"""What the four studies share: budgets, cached training runs, aggregation.

Every study trains through `gkdrl.runners.train.run`, so each training run
is an ordinary run directory (config.json, metrics.jsonl, eval/, student_hf/)
under `<workdir>/runs/<task>/<method>-seed<seed>-<hash>`, the hash covering
every setting. A run that finished is read back instead of trained again,
so the studies share runs (the lambda study reuses the methods study's
on-policy and mixed GKD students) and an interrupted study resumes.

Seeds vary the training (data order, lambda draws, sampling) and the
evaluation's sampling keys; the task data and the SFT teacher and student
are the same for every seed (`task_seed` 0), as in the paper where every
method starts from one SFT checkpoint.
"""

import dataclasses
import hashlib
import json
import math
import os
import pathlib
import re
import time
from typing import Any

from absl import flags
import numpy as np

from gkdrl import evaluation
from gkdrl import networks
from gkdrl.runners import builtin
from gkdrl.runners import checkpointing
from gkdrl.runners import compilation
from gkdrl.runners import flags_lib
from gkdrl.runners import plots
from gkdrl.runners import setup
from gkdrl.runners import train  # pylint: disable=unused-import (flags)

TASK_SEED = 0
# Metrics every table reports, in this order, and which way is better.
METRICS = ("reward", "rouge2", "teacher_kl", "self_bleu")
HIGHER_IS_BETTER = {"reward": True, "rouge2": True, "teacher_kl": False,
                    "self_bleu": False}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Budget:
  """How much each training run and evaluation costs.

  Attributes:
    steps: training steps of every method (SFT continued as long too).
    batch_size: prompts per step.
    learning_rate: peak learning rate (linear warmup, cosine decay).
    eval_examples: validation prompts per evaluation.
    eval_samples_per_prompt: completions per prompt at temperature > 0.
    seeds: training seeds; every method runs once per seed.
    quick: tiny models and steps, for tests (results mean nothing).
  """

  steps: int
  batch_size: int
  learning_rate: float
  eval_examples: int
  eval_samples_per_prompt: int
  seeds: tuple[int, ...]
  quick: bool = False

  def __post_init__(self):
    for name in ("steps", "batch_size", "eval_examples",
                 "eval_samples_per_prompt"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r} must be an int >= 1.")
    if not self.seeds or len(set(self.seeds)) != len(self.seeds):
      raise ValueError(f"seeds={self.seeds!r} must be distinct and non-empty.")


FULL = Budget(steps=300, batch_size=16, learning_rate=1e-3, eval_examples=128,
              eval_samples_per_prompt=4, seeds=(0, 1, 2))
QUICK = Budget(steps=2, batch_size=4, learning_rate=1e-3, eval_examples=4,
               eval_samples_per_prompt=2, seeds=(0,), quick=True)
# The quick mode's stand-ins for the built-in teacher and student.
QUICK_SPECS = {
    "teacher": builtin.BuiltinSpec(d_model=16, n_layers=1, n_heads=2,
                                   n_kv_heads=1, d_ff=32, sft_steps=2,
                                   batch_size=4),
    "student": builtin.BuiltinSpec(d_model=8, n_layers=1, n_heads=2,
                                   n_kv_heads=1, d_ff=16, sft_steps=2,
                                   batch_size=4),
}


def define_flags(default_workdir: str = "runs/experiments") -> None:
  """The flags every study program takes (defined once per process)."""
  if "quick" in flags.FLAGS:
    return
  flags.DEFINE_string("out", default_workdir,
                      "Root directory: runs/ holds the training runs the "
                      "studies share, <study>/ each study's results.")
  flags.DEFINE_bool("quick", False, "Tiny models, 2 steps, one seed: checks "
                    "the pipeline end to end in a minute (for tests).")
  flags.DEFINE_list("seeds", None, "Training seeds (default 0,1,2; quick 0).")
  flags.DEFINE_integer("train_steps", None,
                       f"Steps per training run (default {FULL.steps}).")


def budget_from_flags() -> Budget:
  values = flags.FLAGS
  budget = QUICK if values.quick else FULL
  changes = {}
  if values.seeds:
    try:
      changes["seeds"] = tuple(int(s) for s in values.seeds)
    except ValueError:
      raise ValueError(f"--seeds={values.seeds!r} must be integers.") from None
  if values.train_steps is not None:
    changes["steps"] = values.train_steps
  return dataclasses.replace(budget, **changes)


class Runner:
  """Trains (or reads back) runs for the studies under one root directory."""

  def __init__(self, root, budget: Budget,
               model_paths: dict[str, tuple[str, str]] | None = None):
    """`model_paths`: task -> (teacher, student) replacing the defaults."""
    self.root = pathlib.Path(root)
    self.budget = budget
    self._shared = {}  # task -> train.run's cache of task, models, evals
    self._model_paths = {k: tuple(map(str, v))
                         for k, v in (model_paths or {}).items()}
    self._evaluation = {}  # task -> (task, models) for extra evaluations
    # Identical programs (the same method at another seed) compile once;
    # a cache the caller configured already is kept.
    compilation.use_cache(True, self.root)  # <root>/xla

  def model_paths(self, task_name: str) -> tuple[str, str]:
    """(teacher, student) for a task: built-in, or tiny in quick mode."""
    if task_name in self._model_paths:
      return self._model_paths[task_name]
    if not self.budget.quick:
      return builtin.BUILTIN, builtin.BUILTIN
    if task_name not in self._model_paths:
      task, kwargs = setup.make_task(task_name, seed=TASK_SEED)
      self._model_paths[task_name] = tuple(
          str(builtin.prepare_builtin_model(
              task, task_name, role, task_kwargs=kwargs,
              cache_dir=self.root / "models", spec=QUICK_SPECS[role],
              progress=False))
          for role in ("teacher", "student"))
    return self._model_paths[task_name]

  def values(self, task_name: str, seed: int, **settings) -> dict[str, Any]:
    teacher, student = self.model_paths(task_name)
    b = self.budget
    values = train.default_values(
        task=task_name, seed=seed, task_seed=TASK_SEED, teacher=teacher,
        student=student, steps=b.steps, batch_size=b.batch_size,
        learning_rate=b.learning_rate, eval_examples=b.eval_examples,
        eval_samples_per_prompt=b.eval_samples_per_prompt,
        log_every=max(1, b.steps // 10), save_every=b.steps, workdir="")
    unknown = set(settings) - set(values)
    if unknown:
      raise ValueError(f"Unknown run settings {sorted(unknown)}.")
    values.update(settings)
    return values

  def train(self, task_name: str, method: str, seed: int,
            **settings) -> dict[str, Any]:
    """One training run's summary (train.run's), trained unless cached.

    Args:
      task_name: "facts" or "arithmetic".
      method: the row label; its slug names the run's directory.
      seed: the training seed.
      **settings: flag values of `gkdrl.runners.train` (agent, divergence,
        beta, lmbda, alpha, ...).

    Returns:
      {"teacher", "initial", "final": mode -> metric -> value, "workdir",
      "seconds": wall time of the training including its evaluations}.
    """
    values = self.values(task_name, seed, **settings)
    digest = hashlib.sha256(json.dumps(
        {k: v for k, v in values.items() if k != "workdir"},
        sort_keys=True, default=str).encode()).hexdigest()[:8]
    workdir = (self.root / "runs" / task_name
               / f"{slug(method)}-seed{seed}-{digest}")
    values["workdir"] = str(workdir)
    done = workdir / "summary.json"
    if done.exists():
      return checkpointing.read_json(done)
    start = time.time()
    summary = train.run(values, progress=False,
                        shared=self._shared.setdefault(task_name, {}))
    # A study of hundreds of runs in one process would otherwise reach the
    # kernel's limit on memory mappings and abort in XLA's compiler.
    compilation.release_programs_if_crowded()
    result = {"teacher": summary["teacher"], "initial": summary["initial"],
              "final": summary["final"], "workdir": str(workdir),
              "seconds": time.time() - start}
    checkpointing.write_json(done, result)
    return result

  def _evaluation_context(self, task_name: str):
    if task_name not in self._evaluation:
      task, kwargs = setup.make_task(task_name, seed=TASK_SEED)
      teacher, student = self.model_paths(task_name)
      models = setup.load_models(task=task, task_name=task_name,
                                 task_kwargs=kwargs, teacher=teacher,
                                 student=student, progress=False)
      self._evaluation[task_name] = task, models
    return self._evaluation[task_name]

  def evaluate_at(self, run: dict, task_name: str, seed: int,
                  temperatures: tuple[float, ...]) -> dict[str, dict]:
    """Evaluates a finished run's student at sampling temperatures.

    Returns:
      "t<temperature>" -> metric -> value, cached in the run directory.
    """
    workdir = pathlib.Path(run["workdir"])
    modes = tuple((f"t{t:g}", float(t)) for t in temperatures)
    path = workdir / "eval" / ("temperatures-" + "-".join(
        name for name, _ in modes) + ".json")
    if path.exists():
      return checkpointing.read_json(path)
    config = checkpointing.read_json(workdir / "config.json")
    task, models = self._evaluation_context(task_name)
    _, params = networks.from_pretrained(workdir / "student_hf")
    reward = setup.make_reward(config["reward"], task)
    result = evaluation.evaluate(
        model=models.student, params=params, task=task,
        num_examples=config["eval_examples"],
        max_new_tokens=config["agent_config"]["max_new_tokens"],
        teacher=models.teacher, teacher_params=models.teacher_params,
        reward=reward, samples_per_prompt=config["eval_samples_per_prompt"],
        seed=seed, modes=modes)
    checkpointing.write_json(path, result)
    return result


def slug(label: str) -> str:
  """A directory name for a row label: "GKD JSD(0.9)" -> "gkd_jsd_0.9"."""
  return re.sub(r"[^a-z0-9.-]+", "_", label.lower()).strip("_")


def summarize(values) -> dict[str, Any]:
  """Mean, sample standard deviation (0 for one value) and the values."""
  values = [float(v) for v in values]
  std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
  return {"mean": float(np.mean(values)), "std": std, "n": len(values),
          "values": values}


def seed_stats(runs: dict[str, list], references: dict[str, list],
               modes) -> dict[str, dict]:
  """stats[row][mode][metric]: `summarize` over seeds.

  Rows are "Teacher", then every key of `runs` in order; a row found in
  `references` (per-seed evaluations, e.g. the SFT start) is read there,
  any other from its runs' final evaluations.
  """
  stats = {}
  for label in ("Teacher", *runs):
    evals = (references[label] if label in references
             else [r["final"] for r in runs[label]])
    stats[label] = {mode: {
        metric: summarize([e[mode][metric] for e in evals])
        for metric in METRICS if metric in evals[0][mode]}
                    for mode in modes}
  return stats


def verdict(better, worse, *, higher_is_better: bool = True) -> str:
  """Whether `better` beats `worse` by more than the seed spread.

  Args:
    better, worse: `summarize` outputs; the claim is "better beats worse".
    higher_is_better: the metric's direction.

  Returns:
    "confirmed" when the difference of the means is more than two standard
    errors of the difference in the claimed direction, "contradicted" when
    it is that far the other way, else "cannot tell". With one seed per
    side there is no spread and the answer is always "cannot tell".
  """
  if better["n"] < 2 or worse["n"] < 2:
    return "cannot tell"
  sign = 1.0 if higher_is_better else -1.0
  diff = sign * (better["mean"] - worse["mean"])
  se = math.sqrt(better["std"] ** 2 / better["n"]
                 + worse["std"] ** 2 / worse["n"])
  if se == 0.0:
    return "cannot tell" if diff == 0 else (
        "confirmed" if diff > 0 else "contradicted")
  if diff > 2 * se:
    return "confirmed"
  if diff < -2 * se:
    return "contradicted"
  return "cannot tell"


def fmt(stat: dict | None, digits: int = 3) -> str:
  if stat is None:
    return "-"
  if stat["n"] > 1:
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"
  return f"{stat['mean']:.{digits}f}"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
  lines = ["| " + " | ".join(header) + " |",
           "|" + "|".join(" --- " for _ in header) + "|"]
  lines += ["| " + " | ".join(row) + " |" for row in rows]
  return "\n".join(lines)


def claims_markdown(claims: list[dict]) -> str:
  rows = [[c["claim"], c["evidence"], f"**{c['verdict']}**"] for c in claims]
  return markdown_table(["claim (paper)", "measured", "verdict"], rows)


def save_figure(fig, path) -> None:
  """Lays out, writes (PNG, 110 dpi) and closes a study's figure."""
  plots.save_figure(fig, path, dpi=110)


def write_results(out_dir, name: str, results: dict, markdown: str) -> None:
  """Writes <out_dir>/<name>.json and <name>.md (atomically each)."""
  out_dir = pathlib.Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  checkpointing.write_json(out_dir / f"{name}.json", results)
  tmp = out_dir / f".{name}.md.tmp"
  tmp.write_text(markdown + "\n")
  os.replace(tmp, out_dir / f"{name}.md")


def settings_markdown(budget: Budget, extra: dict[str, Any]) -> str:
  items = {"steps per run": budget.steps, "batch size": budget.batch_size,
           "peak learning rate": budget.learning_rate,
           "seeds": ", ".join(map(str, budget.seeds)),
           "evaluation prompts": budget.eval_examples,
           "samples per prompt at temperature > 0":
               budget.eval_samples_per_prompt, **extra}
  return "\n".join(f"- {k}: {v}" for k, v in items.items())


def main_wrapper(study_fn):
  """An absl main that runs `study_fn(out, budget)` with clear errors."""
  def main(argv):
    if len(argv) > 1:
      raise ValueError(f"Unexpected arguments: {argv[1:]}")
    flags_lib.quiet_logs()
    budget = budget_from_flags()
    start = time.time()
    results = study_fn(pathlib.Path(flags.FLAGS.out), budget)
    print(results["markdown"])
    print(f"\n{results['name']} took {time.time() - start:.0f} s; results "
          f"in {flags.FLAGS.out}/{results['name']}/")
    return 0
  return main
