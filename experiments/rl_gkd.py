r"""Study 4: RL + GKD, the alpha sweep and its reward / fidelity frontier.

    python -m experiments.rl_gkd              # full: facts, 3 seeds
    python -m experiments.rl_gkd --quick      # tiny models, 2 steps

`gkd_rl` on `facts` with the factuality reward (the task's oracle share of
a summary's claims the document supports; the paper used an entailment
model) and JSD(0.9), for alpha in {0, 0.05, 0.1, 0.25, 0.5, 1}: alpha 0 is
unregularised REINFORCE and alpha 1 pure on-policy GKD. The paper's RL-only
baseline, REINFORCE with a KL to the initial student, runs too. Writes
<out>/rl_gkd/{rl_gkd.json, rl_gkd.md, rl_gkd.png}.
"""

import pathlib

from absl import app
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

from experiments import common  # pylint: disable=g-import-not-at-top
from experiments import methods  # pylint: disable=g-import-not-at-top

NAME = "rl_gkd"
TASK = "facts"
ALPHAS = (0.0, 0.05, 0.1, 0.25, 0.5, 1.0)
PAPER_ALPHAS = (0.05, 0.1, 0.25, 0.5)
REF_KL_COEF = 0.1
RL_BASELINE = f"RL + KL to start ({REF_KL_COEF:g})"


def label(alpha: float) -> str:
  return f"alpha {alpha:g}"


def run_settings() -> dict[str, dict]:
  settings = {label(a): dict(agent="gkd_rl", alpha=a, divergence="jsd",
                             beta=0.9) for a in ALPHAS}
  settings[RL_BASELINE] = dict(agent="gkd_rl", alpha=0.0,
                               ref_kl_coef=REF_KL_COEF)
  return settings


def plan(task: str = TASK) -> list[tuple[str, str, dict]]:
  """The (task, label, settings) runs this study trains, at every seed."""
  return [(task, k, v) for k, v in run_settings().items()]


def run_study(out, budget: common.Budget, task: str = TASK) -> dict:
  """Runs the study; writes and returns its results."""
  out = pathlib.Path(out)
  runner = common.Runner(out, budget)
  settings = run_settings()
  stats, _ = methods.collect(runner, task, {"SFT start": None, **settings})
  start, teacher = stats["SFT start"], stats["Teacher"]
  rows, claims = [], []
  for mode in methods.MODES:
    base = start[mode]["reward"]["mean"]
    for name in ("Teacher", "SFT start", *settings):
      s = stats[name][mode]
      gain = (100 * (s["reward"]["mean"] - base) / base) if base else None
      rows.append([mode, name] + [common.fmt(s.get(m))
                                  for m in common.METRICS]
                  + ["-" if gain is None else f"{gain:+.0f}%"])

    def compare(claim, better, worse, metric, mode=mode):
      a, b = stats[better][mode][metric], stats[worse][mode][metric]
      claims.append({
          "claim": claim,
          "evidence": (f"{task}, {mode}, {metric}: {better} "
                       f"{common.fmt(a)} vs {worse} {common.fmt(b)}"),
          "verdict": common.verdict(
              a, b, higher_is_better=common.HIGHER_IS_BETTER[metric])})

    lo, hi = label(PAPER_ALPHAS[0]), label(PAPER_ALPHAS[-1])
    compare("As alpha grows, ROUGE-2 rises", hi, lo, "rouge2")
    compare("As alpha grows, the reward gain falls", lo, hi, "reward")
    for a in PAPER_ALPHAS:
      compare("Every alpha beats the RL-only baseline on ROUGE-2", label(a),
              RL_BASELINE, "rouge2")
      compare("Every alpha beats the teacher on the factuality reward",
              label(a), "Teacher", "reward")
  out_dir = out / NAME
  out_dir.mkdir(parents=True, exist_ok=True)
  _plot(stats, list(settings), out_dir / f"{NAME}.png")
  markdown = "\n\n".join([
      "# Study 4: RL + GKD (alpha sweep)\n\nSettings:\n"
      + common.settings_markdown(budget, {
          "task": task, "reward": "factuality (the task's oracle)",
          "divergence": "JSD(0.9)",
          "alphas": ", ".join(f"{a:g}" for a in ALPHAS),
          "RL-only baseline": f"alpha 0 with ref_kl_coef {REF_KL_COEF:g}"}),
      common.markdown_table(["mode", "run", *common.METRICS,
                             "reward gain vs start"], rows),
      "## Claims\n\n" + common.claims_markdown(claims),
      f"![rl_gkd]({NAME}.png)"])
  results = {"name": NAME, "settings": {"budget": vars(budget), "task": task,
                                        "alphas": ALPHAS,
                                        "ref_kl_coef": REF_KL_COEF},
             "stats": stats, "teacher": teacher, "claims": claims,
             "markdown": markdown}
  common.write_results(out_dir, NAME, results, markdown)
  return results


def _plot(stats, names, path) -> None:
  fig, axes = plt.subplots(2, 2, figsize=(11, 8.5))
  for row, mode in enumerate(methods.MODES):
    for ax, y_key, y_label in ((axes[row][0], "rouge2", "ROUGE-2"),
                               (axes[row][1], "teacher_kl",
                                "reverse KL to teacher")):
      alphas = [n for n in names if n.startswith("alpha")]
      xs = [stats[n][mode]["reward"]["mean"] for n in alphas]
      ys = [stats[n][mode][y_key]["mean"] for n in alphas]
      ax.errorbar(xs, ys, xerr=[stats[n][mode]["reward"]["std"]
                                for n in alphas],
                  yerr=[stats[n][mode][y_key]["std"] for n in alphas],
                  fmt="o-", capsize=2, label="GKD + RL")
      for n, x, y in zip(alphas, xs, ys):
        ax.annotate(n.replace("alpha ", "α="), (x, y),
                    textcoords="offset points", xytext=(4, 4), fontsize=7)
      for name, marker in ((RL_BASELINE, "v"), ("SFT start", "s"),
                           ("Teacher", "*")):
        ax.plot(stats[name][mode]["reward"]["mean"],
                stats[name][mode][y_key]["mean"], marker, markersize=10,
                label=name)
      ax.set_xlabel("factuality reward")
      ax.set_ylabel(y_label)
      ax.set_title(f"{mode} decoding", fontsize=9)
      ax.grid(alpha=0.3)
  axes[0][0].legend(fontsize=7)
  common.save_figure(fig, path)


common.define_flags()

if __name__ == "__main__":
  app.run(common.main_wrapper(run_study))
