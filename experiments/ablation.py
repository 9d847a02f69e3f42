r"""Study 6: why supervised KD beat on-policy GKD on `facts`.

    python -m experiments.ablation             # full (runs `protocol` first)
    python -m experiments.ablation --quick

Starting from the fair protocol's setting (converged two-layer student,
sampling temperature 1, lambda 1, each method at its tuned learning rate),
one factor at a time is changed and supervised KD is compared with on-policy
GKD JSD(0.9) (and, from the unconverged start, SFT continued) at the
ablation seeds, on the test split:
  - the start: the same SFT run's early checkpoint (unconverged);
  - capacity: a one-layer student, fine-tuned to convergence the same way;
  - the student's sampling temperature for on-policy data: 0.7;
  - lambda, the share of on-policy batches: 0.5 and 0.
Factors that only change how the student samples leave supervised KD and
SFT unchanged, so those rows reuse the baseline's runs. Writes
<out>/ablation/{ablation.json, ablation.md, ablation.png}.
"""

import pathlib

from absl import app
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

from experiments import common  # pylint: disable=g-import-not-at-top
from experiments import protocol  # pylint: disable=g-import-not-at-top
from experiments import protocol_lib as lib  # pylint: disable=g-import-not-at-top

NAME = "ablation"
COMPARED = ("SFT (as long)", "Supervised KD", "GKD JSD(0.9)")
GKD = "GKD JSD(0.9)"
KD = "Supervised KD"
BASELINE = "baseline (protocol)"
# Factors that change only how the student samples: the settings GKD
# JSD(0.9) runs with; the start factors replace the student itself.
SAMPLING_FACTORS = {
    "sampling temperature 0.7": dict(sample_temperature=0.7),
    "lambda 0.5": dict(lmbda=0.5),
    "lambda 0": dict(lmbda=0.0),
}
# The start factors and the methods they run: SFT continued only where
# the start is unconverged (what it would collect there is the question).
START_FACTORS = {"unconverged start": COMPARED,
                 "1-layer student": (KD, GKD)}


def plan() -> list:
  """Nothing ahead: the runs need the protocol's pair and rates."""
  return []


def start_dir(ctx: lib.Context, factor: str) -> str:
  if factor == "unconverged start":
    return ctx.unconverged_student()
  if factor == "1-layer student":
    return ctx.small_student()
  return ctx.sft["student"]["path"]


def collect(ctx: lib.Context) -> dict:
  """factor -> method -> runs (each with "test") at the ablation seeds."""
  p = ctx.protocol
  base = protocol.tune_and_run(
      ctx, {m: protocol.METHODS[m] for m in COMPARED})
  chosen = base["chosen"]
  n = len(p.ablation_seeds)  # the first seeds of every method
  runs = {BASELINE: {m: base["runs"][m][:n] for m in COMPARED}}
  for factor, compared in START_FACTORS.items():
    student = start_dir(ctx, factor)
    runs[factor] = {}
    for m in compared:
      runs[factor][m] = []
      for seed in p.ablation_seeds:
        run = ctx.train(f"{m} {factor}", seed, student=student,
                        learning_rate=chosen[m], **protocol.METHODS[m])
        run["test"] = ctx.test_eval(run, seed)
        runs[factor][m].append(run)
  for factor, change in SAMPLING_FACTORS.items():
    runs[factor] = dict(runs[BASELINE])
    settings = {**protocol.METHODS[GKD], **change}
    runs[factor][GKD] = []
    for seed in p.ablation_seeds:
      run = ctx.train(f"{GKD} {factor}", seed, learning_rate=chosen[GKD],
                      **settings)
      run["test"] = ctx.test_eval(run, seed)
      runs[factor][GKD].append(run)
  return {"chosen": chosen, "runs": runs}


def factor_stats(ctx: lib.Context, runs: dict) -> dict:
  p = ctx.protocol
  out = {}
  for factor, by_method in runs.items():
    student = start_dir(ctx, factor)
    out[factor] = {"SFT start": lib.stats_of(
        [ctx.reference_eval("SFT start", student, s)
         for s in p.ablation_seeds])}
    for m, rs in by_method.items():
      out[factor][m] = lib.stats_of([r["test"] for r in rs])
  return out


def orderings(stats: dict) -> list[dict]:
  """Per factor: does GKD JSD(0.9) beat supervised KD (test greedy)?"""
  rows = []
  for factor, s in stats.items():
    a, b = s[GKD]["greedy"]["reward"], s[KD]["greedy"]["reward"]
    rows.append({"factor": factor, "difference": a["mean"] - b["mean"],
                 "claim": f"On-policy GKD JSD(0.9) beats supervised KD "
                          f"({factor})",
                 "evidence": f"test greedy factuality {common.fmt(a)} vs "
                             f"{common.fmt(b)}",
                 "verdict": common.verdict(a, b)})
  base = rows[0]
  for row in rows:
    row["moves ordering"] = (row["verdict"] != base["verdict"]
                             or (row["difference"] > 0)
                             != (base["difference"] > 0))
  return rows


def plot(stats: dict, path) -> None:
  factors = list(stats)
  fig, ax = plt.subplots(figsize=(9, 4))
  labels = ("SFT start",) + COMPARED
  width = 0.8 / len(labels)
  for i, label in enumerate(labels):
    cells = [stats[f].get(label, {}).get("greedy", {}).get("reward")
             for f in factors]
    means = [c["mean"] if c else float("nan") for c in cells]
    stds = [c["std"] if c else 0.0 for c in cells]
    xs = [x + (i - (len(labels) - 1) / 2) * width for x in range(len(factors))]
    ax.bar(xs, means, width, yerr=stds, capsize=2, label=label)
  ax.set_xticks(range(len(factors)))
  ax.set_xticklabels(factors, rotation=20, ha="right", fontsize=8)
  ax.set_ylabel("test greedy factuality")
  ax.grid(axis="y", alpha=0.3)
  ax.legend(fontsize=7)
  common.save_figure(fig, path)


def table(stats: dict) -> str:
  labels = ("SFT start",) + COMPARED
  rows = []
  for factor, s in stats.items():
    rows.append([factor] + [common.fmt(s[l]["greedy"]["reward"])
                            if l in s else "-" for l in labels]
                + [common.fmt(s[GKD]["greedy"]["teacher_kl"])])
  return common.markdown_table(
      ["factor changed"] + [f"{l} (greedy)" for l in labels]
      + [f"{GKD} teacher KL"], rows)


def run_study(out, budget: common.Budget) -> dict:
  """Runs the study; writes and returns its results."""
  p = lib.QUICK if budget.quick else lib.FULL
  ctx = lib.Context(pathlib.Path(out), p, protocol.TASK)
  found = collect(ctx)
  stats = factor_stats(ctx, found["runs"])
  claims = orderings(stats)
  out_dir = pathlib.Path(out) / NAME
  out_dir.mkdir(parents=True, exist_ok=True)
  plot(stats, out_dir / f"{NAME}.png")
  moved = [c["factor"] for c in claims if c["moves ordering"]]
  markdown = "\n\n".join([
      "# Study 6: why supervised KD won on facts (ablation)",
      f"Seeds {', '.join(map(str, p.ablation_seeds))}; learning rates as "
      f"tuned by the protocol: " + ", ".join(
          f"{m} {lr:g}" for m, lr in found["chosen"].items()) + ".",
      "## Test factuality\n\n" + table(stats) + f"\n\n![ablation]({NAME}.png)",
      "## Claims\n\n" + common.claims_markdown(claims),
      "Factors that move the ordering: " + (", ".join(moved) or "none")
      + "."])
  results = {"name": NAME, "settings": lib.settings_dict(p),
             "chosen": found["chosen"], "stats": stats, "claims": claims,
             "moved": moved, "markdown": markdown}
  common.write_results(out_dir, NAME, results, markdown)
  return results


common.define_flags()


if __name__ == "__main__":
  app.run(common.main_wrapper(run_study))
