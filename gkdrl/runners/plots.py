"""The reward-versus-teacher-fidelity picture of an alpha sweep."""

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top


def plot_frontier(rows: list[dict], references: dict[str, dict], path:
                  str | os.PathLike, *, reward_key: str = "factuality",
                  title: str = "") -> None:
  """Plots reward against ROUGE-2 and against teacher KL, one point per row.

  Args:
    rows: one dict per alpha with "alpha", `reward_key`, "rouge2" and
      "teacher_kl".
    references: name -> metrics of reference points (teacher, start).
    path: the PNG to write.
    reward_key: the metric on the x axes.
    title: figure title.
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
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
