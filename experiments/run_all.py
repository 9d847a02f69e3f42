r"""Runs the six studies in order and times each.

    python -m experiments.run_all --out=runs/experiments
    python -m experiments.run_all --quick --out=/tmp/quick
    python -m experiments.run_all --jobs=8     # on a machine with 16 cores

With --jobs=N the training runs of the first four studies (and the built-in
models' SFT) are spread over N worker processes, each pinned to its share of
the CPU cores, before the studies read them back; the results are the same
as sequentially (each run depends only on its own settings and seed). The
protocol and ablation studies train in their own turn, one run at a time:
their runs need the study's SFT pair and the learning rates its grid
chooses.

The studies share one --out, so runs that two studies need train once
(the lambda and diversity studies reuse the methods study's GKD runs).
Writes <out>/timing.json (seconds per study, including the built-in models'
SFT where the cache lacked them) and <out>/results.md (the studies'
Markdown, one after the other).
"""

from concurrent import futures
import multiprocessing
import os
import pathlib
import time

from absl import app
from absl import flags

from experiments import common
from experiments import ablation
from experiments import diversity
from experiments import lambda_sweep
from experiments import methods
from experiments import protocol
from experiments import rl_gkd
from gkdrl.runners import flags_lib

STUDIES = (methods, lambda_sweep, diversity, rl_gkd, protocol, ablation)

flags.DEFINE_integer("jobs", 1, "Worker processes training runs at once.")

_WORKER = {}  # this worker process's Runner (keeps compilations warm)


def all_runs(budget: common.Budget) -> list[tuple[str, str, dict, int]]:
  """Every distinct (task, label, settings, seed) the studies train."""
  runs, seen = [], set()
  for seed in budget.seeds:
    for study in STUDIES:
      for task, label, settings in study.plan():
        key = (task, label, seed)
        if key not in seen:
          seen.add(key)
          runs.append((task, label, settings, seed))
  return runs


def _init_worker(counter, cores_per_worker: int) -> None:
  with counter.get_lock():
    index = counter.value
    counter.value += 1
  cores = sorted(os.sched_getaffinity(0))
  share = cores[index * cores_per_worker % len(cores):][:cores_per_worker]
  os.sched_setaffinity(0, share or cores)
  os.environ["JAX_PLATFORMS"] = "cpu"


def _prepare(out: str, budget: common.Budget, task: str, role: str) -> None:
  runner = common.Runner(out, budget)
  if budget.quick:
    runner.model_paths(task)
    return
  from gkdrl.runners import builtin  # pylint: disable=g-import-not-at-top
  from gkdrl.runners import setup  # pylint: disable=g-import-not-at-top
  task_obj, kwargs = setup.make_task(task, seed=common.TASK_SEED)
  builtin.prepare_builtin_model(task_obj, task, role, task_kwargs=kwargs,
                                progress=False)


def _train(out: str, budget: common.Budget, task: str, label: str,
           settings: dict, seed: int) -> float:
  if "runner" not in _WORKER:
    _WORKER["runner"] = common.Runner(out, budget)
  return _WORKER["runner"].train(task, label, seed, **settings)["seconds"]


def train_in_parallel(out, budget: common.Budget, jobs: int) -> None:
  """Trains every run of the studies with `jobs` worker processes."""
  context = multiprocessing.get_context("spawn")
  cores = max(1, len(os.sched_getaffinity(0)) // jobs)
  runs = all_runs(budget)
  tasks = sorted({run[0] for run in runs})
  with futures.ProcessPoolExecutor(
      jobs, mp_context=context, initializer=_init_worker,
      initargs=(context.Value("i", 0), cores)) as pool:
    roles = ("teacher",) if budget.quick else ("teacher", "student")
    for f in [pool.submit(_prepare, str(out), budget, t, r)
              for t in tasks for r in roles]:
      f.result()
    pending = [pool.submit(_train, str(out), budget, *run) for run in runs]
    for i, f in enumerate(futures.as_completed(pending), 1):
      f.result()
      print(f"trained {i}/{len(pending)} runs", flush=True)



def run_all(out, budget: common.Budget, jobs: int = 1) -> dict:
  """Runs every study; returns {"seconds": {...}, "results": {...}}."""
  out = pathlib.Path(out)
  seconds, results = {}, {}
  if jobs < 1:
    raise ValueError(f"--jobs={jobs!r} must be >= 1.")
  if jobs > 1:
    start = time.time()
    train_in_parallel(out, budget, jobs)
    seconds[f"training ({jobs} jobs)"] = time.time() - start
  for study in STUDIES:
    start = time.time()
    results[study.NAME] = study.run_study(out, budget)
    seconds[study.NAME] = time.time() - start
    print(f"{study.NAME}: {seconds[study.NAME]:.0f} s", flush=True)
  seconds["total"] = sum(seconds.values())
  common.write_results(out, "timing", {"seconds": seconds,
                                       "budget": vars(budget),
                                       "jobs": jobs,
                                       "cpu_count": len(
                                           os.sched_getaffinity(0))},
                       common.markdown_table(
                           ["study", "seconds"],
                           [[k, f"{v:.0f}"] for k, v in seconds.items()]))
  markdown = "\n\n".join(r["markdown"].replace(
      "](", f"]({r['name']}/") for r in results.values())
  (out / "results.md").write_text(markdown + "\n")
  return {"seconds": seconds, "results": results}


def main(argv):
  if len(argv) > 1:
    raise ValueError(f"Unexpected arguments: {argv[1:]}")
  flags_lib.quiet_logs()
  summary = run_all(flags.FLAGS.out, common.budget_from_flags(),
                    jobs=flags.FLAGS.jobs)
  for name, value in summary["seconds"].items():
    print(f"{name:>10}: {value:7.0f} s")
  return 0


if __name__ == "__main__":
  app.run(main)
