r"""Study 2: the student data fraction lambda of GKD.

    python -m experiments.lambda_sweep              # full: facts, 3 seeds
    python -m experiments.lambda_sweep --quick      # tiny models, 2 steps

GKD with JSD(0.9) on `facts` at lambda in {0, 0.25, 0.5, 0.75, 1}: each
step's batch is sampled by the student with probability lambda, else taken
from the dataset (lambda 0 is supervised JSD, 1 fully on-policy). Lambda 0.5
and 1 are the methods study's runs, shared when both studies use one --out.
Writes <out>/lambda/{lambda.json, lambda.md, lambda.png}.
"""

import pathlib

from absl import app
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

from experiments import common  # pylint: disable=g-import-not-at-top
from experiments import methods  # pylint: disable=g-import-not-at-top

NAME = "lambda"
TASK = "facts"
LAMBDAS = (0.0, 0.25, 0.5, 0.75, 1.0)


def label(lmbda: float) -> str:
  # The labels of lambda 1 and 0.5 are the methods study's, so the runs
  # are shared (same settings, same directory).
  return {1.0: "GKD JSD(0.9)", 0.5: "Mixed GKD JSD(0.9)"}.get(
      lmbda, f"GKD JSD(0.9) lambda {lmbda:g}")


def run_settings() -> dict[str, dict]:
  return {label(l): dict(agent="gkd", divergence="jsd", beta=0.9, lmbda=l)
          for l in LAMBDAS}


def plan(task: str = TASK) -> list[tuple[str, str, dict]]:
  """The (task, label, settings) runs this study trains, at every seed."""
  return [(task, k, v) for k, v in run_settings().items()]


def run_study(out, budget: common.Budget, task: str = TASK) -> dict:
  """Runs the study; writes and returns its results."""
  out = pathlib.Path(out)
  runner = common.Runner(out, budget)
  settings = run_settings()
  stats, _ = methods.collect(runner, task, {"SFT start": None, **settings})
  rows = []
  for mode in methods.MODES:
    for l in LAMBDAS:
      s = stats[label(l)][mode]
      rows.append([mode, f"{l:g}"] + [common.fmt(s.get(m))
                                     for m in common.METRICS])
  claims = []
  for mode in methods.MODES:
    for better, worse in ((1.0, 0.5), (0.5, 0.0), (1.0, 0.0)):
      a = stats[label(better)][mode]["reward"]
      b = stats[label(worse)][mode]["reward"]
      claims.append({
          "claim": "On-policy (lambda 1) >= mixed (0.5) > supervised (0)",
          "evidence": (f"{task}, {mode}, reward: lambda {better:g} "
                       f"{common.fmt(a)} vs lambda {worse:g} "
                       f"{common.fmt(b)}"),
          "verdict": common.verdict(a, b)})
  out_dir = out / NAME
  out_dir.mkdir(parents=True, exist_ok=True)
  _plot(stats, out_dir / f"{NAME}.png")
  markdown = "\n\n".join([
      "# Study 2: student data fraction lambda\n\nSettings:\n"
      + common.settings_markdown(budget, {
          "task": task, "divergence": "JSD(0.9)",
          "lambdas": ", ".join(f"{l:g}" for l in LAMBDAS)}),
      common.markdown_table(["mode", "lambda", *common.METRICS], rows),
      "SFT start, greedy reward: "
      + common.fmt(stats["SFT start"]["greedy"]["reward"]),
      "## Claims\n\n" + common.claims_markdown(claims),
      f"![lambda]({NAME}.png)"])
  results = {"name": NAME, "settings": {"budget": vars(budget), "task": task,
                                        "lambdas": LAMBDAS},
             "stats": {f"{l:g}": stats[label(l)] for l in LAMBDAS},
             "start": stats["SFT start"], "claims": claims,
             "markdown": markdown}
  common.write_results(out_dir, NAME, results, markdown)
  return results


def _plot(stats, path) -> None:
  fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
  for ax, metric in zip(axes, ("reward", "rouge2", "teacher_kl")):
    for mode in methods.MODES:
      means = [stats[label(l)][mode][metric]["mean"] for l in LAMBDAS]
      stds = [stats[label(l)][mode][metric]["std"] for l in LAMBDAS]
      ax.errorbar(LAMBDAS, means, yerr=stds, marker="o", capsize=3,
                  label=mode)
      ax.axhline(stats["SFT start"][mode][metric]["mean"], ls=":",
                 color=ax.lines[-1].get_color(), lw=1)
    ax.set_xlabel("lambda (student data fraction)")
    ax.set_title(metric)
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize=8, title="dotted: SFT start", title_fontsize=7)
  common.save_figure(fig, path)


common.define_flags()

if __name__ == "__main__":
  app.run(common.main_wrapper(run_study))
