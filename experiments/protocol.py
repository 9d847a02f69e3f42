r"""Study 5: the methods compared under a fair protocol, on both tasks.

    python -m experiments.protocol             # full
    python -m experiments.protocol --quick     # tiny models, 2 steps

What the methods study leaves open, settled as the GKD paper does it:
  1. Converged starts. The study's own teacher and student (a two-layer
     student, a teacher about 3.5x its size; the default job's pair is not
     touched) are fine-tuned until the validation loss stops improving
     (`early_stopping`), keeping the best checkpoint.
  2. Tuned learning rates. Every method runs each learning rate of a grid
     at seed 0; the one with the best *validation* greedy reward is kept
     (the test split is never read for the choice).
  3. Seeds and test. The chosen rate runs at every seed; every run is
     evaluated on the *test* split; the verdict rule is the methods
     study's (difference of means beyond two standard errors).
  4. Curves. Each run evaluates on validation every `eval_every` steps,
     so the report shows whether the metric has flattened.
Every method has the same steps and batch. Each task (`facts`, then
`arithmetic`) has its own pair and runs. Writes <out>/protocol/
{protocol.json, protocol.md} and, per task, protocol_<task>.png (curves)
and sft_<task>.png.
"""

import pathlib

from absl import app

from experiments import common
from experiments import methods as methods_study
from experiments import protocol_lib as lib

NAME = "protocol"
TASKS = ("facts", "arithmetic")
TASK = "facts"  # the ablation's task
# What each task's reward measures, for the claims' wording.
REWARD_NAMES = {"facts": "factuality", "arithmetic": "accuracy"}
METHODS = dict(methods_study.TRAINED_METHODS)
ON_POLICY = methods_study.ON_POLICY
BASELINES = ("SFT start", "SFT (as long)", "Supervised KD", "SeqKD")


def plan() -> list:
  """No runs to train ahead: they need the study's SFT pair and the LRs
  its grid chooses, so they train when the study runs (`run_all --jobs`
  leaves them to it)."""
  return []


def tune_and_run(ctx: lib.Context, methods: dict) -> dict:
  """LR grid at the first seed (validation), then every seed (test).

  Returns:
    {"grid": method -> lr -> validation greedy reward, "chosen": method ->
    lr, "runs": method -> [run at each seed, with "test"]}.
  """
  p = ctx.protocol
  grid, chosen, runs = {}, {}, {}
  for label, settings in methods.items():
    by_lr = {lr: ctx.train(label, p.seeds[0], learning_rate=lr, **settings)
             for lr in p.learning_rates}
    grid[label] = {f"{lr:g}": lib.validation_score(r)
                   for lr, r in by_lr.items()}
    chosen[label] = lib.choose_learning_rate(by_lr)
    seeds = lib.method_seeds(p, settings)
    runs[label] = [by_lr[chosen[label]]] + [
        ctx.train(label, seed, learning_rate=chosen[label], **settings)
        for seed in seeds[1:]]
    for seed, run in zip(seeds, runs[label]):
      run["test"] = ctx.test_eval(run, seed)
  return {"grid": grid, "chosen": chosen, "runs": runs}


def claims(stats: dict, task: str = TASK) -> list[dict]:
  """The paper's central claim, on test greedy reward, per on-policy GKD."""
  out, reward = [], f"test greedy {REWARD_NAMES[task]}"
  for gkd in ON_POLICY:
    for baseline in BASELINES:
      a, b = stats[gkd]["greedy"]["reward"], stats[baseline]["greedy"]["reward"]
      out.append({
          "task": task,
          "claim": f"On-policy GKD beats {baseline} (paper's results table)",
          "evidence": (f"{task}, {reward}: {gkd} {common.fmt(a)} vs "
                       f"{baseline} {common.fmt(b)}"),
          "verdict": common.verdict(a, b)})
  a = stats["SFT (as long)"]["greedy"]["reward"]
  b = stats["SFT start"]["greedy"]["reward"]
  out.append({"task": task,
              "claim": "The SFT start is converged (SFT continued gains "
                       "nothing): checked as 'SFT continued beats the start'",
              "evidence": f"{task}, {reward}: {common.fmt(a)} vs "
                          f"{common.fmt(b)}",
              "verdict": common.verdict(a, b)})
  return out


def stats_table(stats: dict, mode: str) -> str:
  metrics = [m for m in common.METRICS if m in stats["Teacher"][mode]]
  rows = [[label] + [common.fmt(stats[label][mode].get(m)) for m in metrics]
          for label in stats]
  return common.markdown_table(["method"] + metrics, rows)


def sft_table(sft: dict) -> str:
  rows = [[role, f"{r['params']:,}", str(r["best_step"]),
           f"{r['best_loss']:.4f}", str(r["stopped_step"])]
          for role, r in sft.items()]
  return common.markdown_table(
      ["model", "parameters", "kept step (best validation loss)",
       "validation loss", "stopped at"], rows)


def grid_table(grid: dict, chosen: dict) -> str:
  rates = list(next(iter(grid.values())))
  rows = [[label] + [f"{grid[label][r]:.3f}" for r in rates]
          + [f"{chosen[label]:g}"] for label in grid]
  return common.markdown_table(
      ["method"] + [f"lr {r}" for r in rates] + ["chosen"], rows)


def curves_table(curves: dict) -> str:
  steps = next(iter(curves.values()))["steps"]
  rows = [[label] + [f"{m:.3f}" for m in c["mean"]]
          for label, c in curves.items()]
  return common.markdown_table(["method"] + [f"step {s}" for s in steps],
                               rows)


def task_markdown(task: str, r: dict) -> str:
  """One task's sections: SFT, learning rates, curves, test tables."""
  sections = [
      f"## {task}: supervised fine-tuning with early stopping\n\n"
      + sft_table(r["sft"]) + f"\n\n![sft](sft_{task}.png)",
      f"## {task}: learning rates (validation greedy reward at seed 0)\n\n"
      + grid_table(r["grid"], r["chosen"]),
      f"## {task}: validation greedy reward against steps (mean over "
      "seeds)\n\n" + curves_table(r["curves"])
      + f"\n\n![curves]({NAME}_{task}.png)"]
  for mode in lib.MODES:
    sections.append(f"## {task}: test, {mode} decoding\n\n"
                    + stats_table(r["stats"], mode))
  return "\n\n".join(sections)


def markdown(results: dict, p: lib.Protocol) -> str:
  sections = [
      "# Study 5: the fair protocol",
      "Settings:\n" + "\n".join(f"- {k}: {v}" for k, v in {
          "tasks": ", ".join(results["tasks"]),
          "steps per run": p.steps, "batch size": p.batch_size,
          "learning-rate grid (seed 0, validation)": p.learning_rates,
          "seeds": ", ".join(map(str, p.seeds)) + " (SeqKD and on-policy "
                   f"GKD, which sample: the first {p.sampling_seeds})",
          "validation prompts per evaluation": p.val_examples,
          "evaluation every": f"{p.eval_every} steps",
          "test prompts": p.test_examples,
          "samples per prompt at temperature 1": p.samples_per_prompt,
          "SFT early stopping": p.stopping}.items())]
  sections += [task_markdown(task, r) for task, r in results["tasks"].items()]
  sections.append("## Claims\n\n" + common.claims_markdown(
      results["claims"]))
  return "\n\n".join(sections)


def run_task(out, p: lib.Protocol, task: str) -> dict:
  """One task's protocol: SFT pair, tuning, seeds, test; plots its curves."""
  ctx = lib.Context(pathlib.Path(out), p, task)
  result = tune_and_run(ctx, METHODS)
  stats = lib.test_stats(ctx, result["runs"])
  curves = {label: lib.validation_curves(runs)
            for label, runs in result["runs"].items()}
  out_dir = pathlib.Path(out) / NAME
  out_dir.mkdir(parents=True, exist_ok=True)
  lib.plot_sft(ctx.sft, out_dir / f"sft_{task}.png")
  lib.plot_curves(curves, out_dir / f"{NAME}_{task}.png")
  sft = {k: {f: v[f] for f in ("best_step", "best_loss", "stopped_step",
                               "curves")} for k, v in ctx.sft.items()}
  for role, record in ctx.sft.items():
    sft[role]["params"] = lib.param_count(record["path"])
  return {"sft": sft, "grid": result["grid"], "chosen": result["chosen"],
          "stats": stats, "curves": curves, "claims": claims(stats, task)}


def run_study(out, budget: common.Budget) -> dict:
  """Runs the study on every task; writes and returns its results."""
  p = lib.QUICK if budget.quick else lib.FULL
  tasks = {task: run_task(out, p, task) for task in TASKS}
  results = {"name": NAME, "settings": lib.settings_dict(p), "tasks": tasks,
             "claims": [c for r in tasks.values() for c in r["claims"]]}
  results["markdown"] = markdown(results, p)
  common.write_results(pathlib.Path(out) / NAME, NAME, results,
                       results["markdown"])
  return results


common.define_flags()


if __name__ == "__main__":
  app.run(common.main_wrapper(run_study))
