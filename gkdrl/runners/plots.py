"""Pictures of runs: a run's curves, and an alpha sweep's frontier."""

import json
import os
import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top


def save_figure(fig, path: str | os.PathLike, *, dpi: int) -> None:
  """Lays `fig` out tightly, writes it to `path` (PNG) and closes it.

  `Figure.tight_layout` leaves a placeholder layout engine on the figure,
  and `savefig` draws a figure that has one twice (a dry run, then the
  image). Dropping the engine once the layout is done writes the same
  pixels with one draw: a run's plot took 0.65 s instead of 0.78 s.
  """
  fig.tight_layout()
  fig.set_layout_engine(None)
  fig.savefig(path, dpi=dpi)
  plt.close(fig)


def plot_frontier(rows: list[dict], references: dict[str, dict], path:
                  str | os.PathLike, *, reward_key: str = "factuality",
                  title: str = "", adaptive: list[dict] = ()) -> None:
  """Plots reward against ROUGE-2 and against teacher KL, one point per row.

  Args:
    rows: one dict per alpha with "alpha", `reward_key`, "rouge2" and
      "teacher_kl".
    references: name -> metrics of reference points (teacher, start).
    path: the PNG to write.
    reward_key: the metric on the x axes.
    title: figure title.
    adaptive: rows of adaptive-alpha runs (with "target_teacher_kl"), each
      a red diamond off the fixed-alpha line.
  """
  fig, axes = plt.subplots(1, 2, figsize=(10, 4))
  for ax, y_key, y_label in ((axes[0], "rouge2", "ROUGE-2"),
                             (axes[1], "teacher_kl",
                              "reverse KL to teacher")):
    xs = [r[reward_key] for r in rows]
    ys = [r[y_key] for r in rows]
    ax.plot(xs, ys, "o-", color="tab:blue", label="GKD+RL")
    for r, x, y in zip(rows, xs, ys):
      ax.annotate(f"α={r['alpha']:g}", (x, y), textcoords="offset points",
                  xytext=(4, 4), fontsize=8)
    for r in adaptive:
      ax.plot(r[reward_key], r[y_key], "D", color="tab:red", markersize=8,
              label=f"adaptive α, KL target {r['target_teacher_kl']:g}")
    for (name, metrics), marker in zip(references.items(), "*sDv^"):
      if reward_key in metrics and y_key in metrics:
        ax.plot(metrics[reward_key], metrics[y_key], marker, markersize=10,
                label=name)
    ax.set_xlabel(reward_key)
    ax.set_ylabel(y_label)
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize=8)
  if title:
    fig.suptitle(title)
  save_figure(fig, path, dpi=120)


TRAINING_CURVES = (("loss/total", "loss"), ("reward/mean", "reward"),
                   ("kl/teacher", "teacher KL"))
EVAL_CURVES = (("reward", "eval reward"), ("teacher_kl", "eval teacher KL"),
               ("rouge2", "eval ROUGE-2"), ("self_bleu", "eval Self-BLEU"))


def _read_evaluations(workdir: pathlib.Path) -> list[dict]:
  """initial, step_<N> and final evaluations, by step."""
  found = {}
  for path in sorted((workdir / "eval").glob("*.json")):
    name = path.stem
    if name == "initial" or name == "final" or name.startswith("step_"):
      result = json.loads(path.read_text())
      found.setdefault(int(result["step"]), result)
  return [found[step] for step in sorted(found)]


def plot_run(workdir: str | os.PathLike) -> pathlib.Path:
  """Plots a run's curves against steps into `<workdir>/plots.png`.

  Training loss, reward and teacher KL from metrics.jsonl; the evaluation
  metrics (reward, teacher KL, ROUGE-2, Self-BLEU) of eval/initial.json,
  eval/step_<N>.json and eval/final.json, one line per decoding mode, with
  the teacher's (eval/teacher.json) dashed.

  Args:
    workdir: the run directory.

  Returns:
    The path of the PNG.
  """
  workdir = pathlib.Path(workdir)
  lines = []
  metrics_path = workdir / "metrics.jsonl"
  if metrics_path.exists():
    lines = [json.loads(line) for line in
             metrics_path.read_text().splitlines() if line.strip()]
  evaluations = _read_evaluations(workdir)
  teacher_path = workdir / "eval" / "teacher.json"
  teacher = (json.loads(teacher_path.read_text()) if teacher_path.exists()
             else {})
  modes = [m for m in (evaluations[0] if evaluations else {}) if m != "step"]
  fig, axes = plt.subplots(2, 4, figsize=(16, 7))
  for ax, (key, label) in zip(axes[0], TRAINING_CURVES):
    points = [(r["step"], r[key]) for r in lines if key in r]
    if points:
      ax.plot(*zip(*points), color="tab:blue")
    ax.set_title(label)
  axes[0][3].axis("off")
  for ax, (key, label) in zip(axes[1], EVAL_CURVES):
    for mode, color in zip(modes, ("tab:blue", "tab:orange", "tab:green",
                                   "tab:red")):
      points = [(r["step"], r[mode][key]) for r in evaluations
                if key in r.get(mode, {})]
      if points:
        ax.plot(*zip(*points), "o-", color=color, label=mode)
      if key in teacher.get(mode, {}):
        ax.axhline(teacher[mode][key], color=color, linestyle="--",
                   linewidth=1, label=f"teacher ({mode})")
    ax.set_title(label)
    if ax.lines:
      ax.legend(fontsize=7)
  for ax in axes.flat:
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
  fig.suptitle(str(workdir))
  path = workdir / "plots.png"
  save_figure(fig, path, dpi=100)
  return path
