r"""Study 1, the paper's Figure 1: which method distils the teacher best.

    python -m experiments.methods              # full: both tasks, 3 seeds
    python -m experiments.methods --quick      # tiny models, 2 steps

Every method starts from the same SFT student and trains for the same number
of steps: SFT continued on the ground truth, SeqKD (SFT on the teacher's
greedy outputs), supervised KD (forward KL on the dataset), on-policy GKD
(lambda 1) with forward KL, reverse KL and JSD(0.9), and mixed GKD (lambda
0.5, JSD(0.9)). Each is evaluated greedily and by sampling at temperature 1
on the task reward, ROUGE-2 and the reverse KL to the teacher. Writes
<out>/methods/{methods.json, methods.md, methods.png}.
"""

import json
import pathlib

from absl import app
from absl import flags
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

from experiments import common  # pylint: disable=g-import-not-at-top

NAME = "methods"
TASKS = ("facts", "arithmetic")
MODES = ("greedy", "sample")
# Row label -> train.run settings of the methods every study compares.
TRAINED_METHODS = {
    "SFT (as long)": dict(agent="sft"),
    "SeqKD": dict(agent="seqkd", sample_temperature=0.0),
    "Supervised KD": dict(agent="supervised_kd"),
    "GKD forward KL": dict(agent="gkd", divergence="forward_kl", lmbda=1.0),
    "GKD reverse KL": dict(agent="gkd", divergence="reverse_kl", lmbda=1.0),
    "GKD JSD(0.9)": dict(agent="gkd", divergence="jsd", beta=0.9, lmbda=1.0),
}
# This study's rows; None is the starting SFT student itself.
METHODS = {
    "SFT start": None,
    **TRAINED_METHODS,
    "Mixed GKD JSD(0.9)": dict(agent="gkd", divergence="jsd", beta=0.9,
                               lmbda=0.5),
}
ON_POLICY = ("GKD forward KL", "GKD reverse KL", "GKD JSD(0.9)")
BASELINES = ("SFT start", "Supervised KD", "SeqKD")


def plan(tasks=TASKS) -> list[tuple[str, str, dict]]:
  """The (task, method, settings) runs this study trains, at every seed."""
  return [(task, label, settings) for task in tasks
          for label, settings in METHODS.items() if settings is not None]


def collect(runner: common.Runner, task: str,
            methods: dict = METHODS) -> tuple[dict, dict]:
  """Trains every method at every seed on `task`.

  Returns:
    (stats, runs): stats[method][mode][metric] is a `common.summarize` over
    seeds (with "Teacher" as a row too); runs[method] the per-seed summaries.
  """
  runs = {label: [] for label in methods}
  references = {"Teacher": [], "SFT start": []}
  for seed in runner.budget.seeds:
    for label, settings in methods.items():
      if settings is None:
        continue
      run = runner.train(task, label, seed, **settings)
      runs[label].append(run)
    references["Teacher"].append(run["teacher"])
    references["SFT start"].append(run["initial"])
  return common.seed_stats(runs, references, MODES), runs


def step_seconds(run: dict) -> float | None:
  """Median wall time per logged training step, compile excluded."""
  path = pathlib.Path(run["workdir"]) / "metrics.jsonl"
  records = [json.loads(line)
             for line in path.read_text().splitlines()]
  times = [(r["step"], r["time"]) for r in records if "time" in r]
  if len(times) < 3:
    return None
  # The first interval holds the compilations; later ones are steady.
  rates = [(t1 - t0) / (s1 - s0)
           for (s0, t0), (s1, t1) in zip(times[1:], times[2:])]
  rates.sort()
  return rates[len(rates) // 2]


def claims(task: str, stats: dict) -> list[dict]:
  """PAPER.md's method claims, checked on one task's results."""
  out = []

  def compare(claim, better, worse, mode="greedy", metric="reward"):
    higher = common.HIGHER_IS_BETTER[metric]
    a, b = stats[better][mode][metric], stats[worse][mode][metric]
    out.append({
        "task": task, "claim": claim,
        "evidence": (f"{task}, {mode}, {metric}: {better} "
                     f"{common.fmt(a)} vs {worse} {common.fmt(b)}"),
        "verdict": common.verdict(a, b, higher_is_better=higher)})

  for gkd in ON_POLICY:
    for baseline in BASELINES:
      compare(f"On-policy GKD beats {baseline} (paper's results table)",
              gkd, baseline)
  compare("On-policy (lambda 1) beats mixed (lambda 0.5)", "GKD JSD(0.9)",
          "Mixed GKD JSD(0.9)")
  for mode in MODES:
    for better in ("GKD reverse KL", "GKD JSD(0.9)"):
      compare("With sampling at temperature 1, reverse KL / JSD(0.9) beat "
              "forward KL" if mode == "sample" else
              "With greedy decoding the divergences are close (the paper "
              "expects no clear winner)", better, "GKD forward KL", mode)
  return out


def plot(all_stats: dict, path) -> None:
  tasks = list(all_stats)
  fig, axes = plt.subplots(len(tasks), 3, figsize=(15, 3.6 * len(tasks)),
                           squeeze=False)
  for row, task in enumerate(tasks):
    stats = all_stats[task]
    labels = list(stats)
    for col, metric in enumerate(("reward", "rouge2", "teacher_kl")):
      ax = axes[row][col]
      width = 0.38
      for i, mode in enumerate(MODES):
        means = [stats[l][mode][metric]["mean"] for l in labels]
        stds = [stats[l][mode][metric]["std"] for l in labels]
        xs = [x + (i - 0.5) * width for x in range(len(labels))]
        ax.bar(xs, means, width, yerr=stds, capsize=2, label=mode)
      ax.set_xticks(range(len(labels)))
      ax.set_xticklabels(labels, rotation=40, ha="right", fontsize=7)
      ax.set_title(f"{task}: {metric}", fontsize=9)
      ax.grid(axis="y", alpha=0.3)
  axes[0][0].legend(fontsize=8)
  common.save_figure(fig, path)


def table(stats: dict, mode: str) -> str:
  metrics = [m for m in common.METRICS if m in stats["Teacher"][mode]]
  rows = [[label] + [common.fmt(stats[label][mode].get(m)) for m in metrics]
          for label in stats]
  return common.markdown_table(["method"] + metrics, rows)


def run_study(out, budget: common.Budget, tasks=TASKS) -> dict:
  """Runs the study; writes and returns its results."""
  out = pathlib.Path(out)
  runner = common.Runner(out, budget)
  results = {"name": NAME, "settings": {"budget": vars(budget),
                                        "tasks": list(tasks),
                                        "methods": METHODS},
             "tasks": {}, "claims": []}
  sections = [f"# Study 1: methods (Figure 1)\n\nSettings:\n"
              + common.settings_markdown(budget, {"tasks": ", ".join(tasks)})]
  all_stats = {}
  for task in tasks:
    stats, runs = collect(runner, task)
    all_stats[task] = stats
    seconds = {label: [s for s in map(step_seconds, rs) if s is not None]
               for label, rs in runs.items() if rs}
    task_claims = claims(task, stats)
    results["tasks"][task] = {
        "stats": stats,
        "step_seconds": {k: common.summarize(v) for k, v in seconds.items()
                         if v},
        "run_seconds": {k: [r["seconds"] for r in rs]
                        for k, rs in runs.items() if rs}}
    results["claims"] += task_claims
    for mode in MODES:
      sections.append(f"## {task}, {mode} decoding\n\n" + table(stats, mode))
  sections.append("## Claims\n\n" + common.claims_markdown(results["claims"]))
  out_dir = out / NAME
  out_dir.mkdir(parents=True, exist_ok=True)
  plot(all_stats, out_dir / f"{NAME}.png")
  sections.append(f"![methods]({NAME}.png)")
  results["markdown"] = "\n\n".join(sections)
  common.write_results(out_dir, NAME, results, results["markdown"])
  return results


common.define_flags()
flags.DEFINE_list("tasks", list(TASKS), "Tasks to run the methods on.")


def _study(out, budget):
  return run_study(out, budget, tasks=tuple(flags.FLAGS.tasks))


if __name__ == "__main__":
  app.run(common.main_wrapper(_study))
