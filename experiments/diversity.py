r"""Study 3: divergence versus diversity (Self-BLEU) and reward.

    python -m experiments.diversity              # full: facts, 3 seeds
    python -m experiments.diversity --quick      # tiny models, 2 steps

The on-policy GKD students of the methods study (forward KL, JSD(0.9),
reverse KL on `facts`; trained here if missing) are sampled at temperatures
0.1, 0.5 and 1.0, several completions per prompt. Self-BLEU is measured
between a prompt's completions (higher = less diverse) and averaged over
prompts. Writes <out>/diversity/{diversity.json, diversity.md,
diversity.png}.
"""

import pathlib

from absl import app
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

from experiments import common  # pylint: disable=g-import-not-at-top
from experiments import methods  # pylint: disable=g-import-not-at-top

NAME = "diversity"
TASK = "facts"
TEMPERATURES = (0.1, 0.5, 1.0)
# From mode covering to mode seeking.
DIVERGENCES = ("GKD forward KL", "GKD JSD(0.9)", "GKD reverse KL")


def plan(task: str = TASK) -> list[tuple[str, str, dict]]:
  """The (task, label, settings) runs this study trains, at every seed."""
  return [(task, label, methods.METHODS[label]) for label in DIVERGENCES]


def run_study(out, budget: common.Budget, task: str = TASK) -> dict:
  """Runs the study; writes and returns its results."""
  out = pathlib.Path(out)
  runner = common.Runner(out, budget)
  evals = {label: [] for label in DIVERGENCES}
  for seed in budget.seeds:
    for label in DIVERGENCES:
      run = runner.train(task, label, seed, **methods.METHODS[label])
      evals[label].append(runner.evaluate_at(run, task, seed, TEMPERATURES))
  stats = {label: {f"t{t:g}": {
      metric: common.summarize([e[f"t{t:g}"][metric] for e in evals[label]])
      for metric in common.METRICS} for t in TEMPERATURES}
           for label in DIVERGENCES}
  rows = [[label, f"{t:g}"] + [common.fmt(stats[label][f"t{t:g}"][m])
                               for m in common.METRICS]
          for t in TEMPERATURES for label in DIVERGENCES]
  claims = []
  for t in TEMPERATURES:
    for more, less in zip(DIVERGENCES, DIVERGENCES[1:]):
      # Diversity falls from forward to reverse KL: Self-BLEU rises.
      a = stats[less][f"t{t:g}"]["self_bleu"]
      b = stats[more][f"t{t:g}"]["self_bleu"]
      claims.append({
          "claim": "Diversity falls from forward KL to reverse KL "
                   "(Self-BLEU rises)",
          "evidence": (f"{task}, temperature {t:g}, Self-BLEU: {less} "
                       f"{common.fmt(a, 1)} vs {more} {common.fmt(b, 1)}"),
          "verdict": common.verdict(a, b)})
  out_dir = out / NAME
  out_dir.mkdir(parents=True, exist_ok=True)
  _plot(stats, out_dir / f"{NAME}.png")
  markdown = "\n\n".join([
      "# Study 3: divergence versus diversity\n\nSettings:\n"
      + common.settings_markdown(budget, {
          "task": task, "temperatures": ", ".join(map(str, TEMPERATURES)),
          "Self-BLEU": "between the completions of each prompt, averaged "
                       "over prompts (0-100, higher = less diverse)"}),
      common.markdown_table(["divergence", "temperature", *common.METRICS],
                            rows),
      "## Claims\n\n" + common.claims_markdown(claims),
      f"![diversity]({NAME}.png)"])
  results = {"name": NAME, "settings": {"budget": vars(budget), "task": task,
                                        "temperatures": TEMPERATURES},
             "stats": stats, "claims": claims, "markdown": markdown}
  common.write_results(out_dir, NAME, results, markdown)
  return results


def _plot(stats, path) -> None:
  fig, ax = plt.subplots(figsize=(6, 4.5))
  for label, marker in zip(DIVERGENCES, "o^s"):
    xs = [stats[label][f"t{t:g}"]["self_bleu"]["mean"] for t in TEMPERATURES]
    ys = [stats[label][f"t{t:g}"]["reward"]["mean"] for t in TEMPERATURES]
    ax.plot(xs, ys, marker=marker, label=label)
    for t, x, y in zip(TEMPERATURES, xs, ys):
      ax.annotate(f"T={t:g}", (x, y), textcoords="offset points",
                  xytext=(4, 4), fontsize=7)
  ax.set_xlabel("Self-BLEU (higher = less diverse)")
  ax.set_ylabel("task reward")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  common.save_figure(fig, path)


common.define_flags()

if __name__ == "__main__":
  app.run(common.main_wrapper(run_study))
