r"""Trains gkd_rl once per alpha, everything else equal, then compares.

    python -m gkdrl.runners.sweep_alpha --alphas=0,0.05,0.1,0.25,0.5,1 \
        --workdir=runs/sweep

Each alpha trains in <workdir>/alpha_<alpha> (resumable like train). Writes
<workdir>/sweep.csv and sweep.json (one row per alpha with the evaluation
keys) and sweep.png: the task reward against ROUGE-2 and against teacher KL,
one labelled point per alpha, with the teacher and the starting student as
reference points (the paper's RL + GKD figure).
"""

import csv
import pathlib
import sys

from absl import app
from absl import flags

from gkdrl.runners import checkpointing
from gkdrl.runners import flags_lib
from gkdrl.runners import loop
from gkdrl.runners import plots
from gkdrl.runners import train  # defines the training flags

flags.DEFINE_list("alphas", ["0", "0.05", "0.1", "0.25", "0.5", "1"],
                  "Teacher weights to train, each in [0, 1].")
flags.DEFINE_enum("mode", "greedy", ["greedy", "sample"],
                  "Decoding mode whose metrics go into the table and plot.")
FLAGS = flags.FLAGS


def parse_alphas(values) -> list[float]:
  alphas = []
  for value in values:
    try:
      alpha = float(value)
    except ValueError:
      raise ValueError(f"--alphas entry {value!r} is not a number.") from None
    if not 0.0 <= alpha <= 1.0:
      raise ValueError(f"--alphas entry {alpha!r} is outside [0, 1].")
    alphas.append(alpha)
  if not alphas:
    raise ValueError("--alphas is empty.")
  return alphas


def sweep(values: dict, alphas: list[float], *, mode: str = "greedy",
          progress: bool = True) -> list[dict]:
  """Runs the sweep; returns one row per alpha (and writes the outputs)."""
  root = pathlib.Path(values["workdir"])
  shared = {}
  rows = []
  summary = None
  for alpha in alphas:
    run_values = dict(values, agent="gkd_rl", alpha=alpha,
                      workdir=str(root / f"alpha_{alpha:g}"))
    summary = train.run(run_values, progress=progress, shared=shared)
    rows.append({"alpha": alpha, "workdir": run_values["workdir"],
                 **summary["final"][mode]})
  references = {"teacher": summary["teacher"][mode],
                "student start": summary["initial"][mode]}
  checkpointing.write_json(root / "sweep.json",
                           {"mode": mode, "rows": rows,
                            "references": references})
  keys = sorted({k for row in rows for k in row} - {"alpha", "workdir"})
  with (root / "sweep.csv").open("w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=["alpha", *keys, "workdir"])
    writer.writeheader()
    for row in rows:
      writer.writerow(row)
  reward_key = "factuality" if "factuality" in rows[0] else "reward"
  plots.plot_frontier(rows, references, root / "sweep.png",
                      reward_key=reward_key,
                      title=f"alpha sweep on {values['task']} ({mode})")
  return rows


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  flags_lib.quiet_logs()
  values = train.flag_values()
  if FLAGS["workdir"].using_default_value:
    values["workdir"] = "runs/sweep"
  try:
    if FLAGS["agent"].present and FLAGS.agent != "gkd_rl":
      raise ValueError(f"--agent={FLAGS.agent!r}: sweep_alpha trains gkd_rl.")
    alphas = parse_alphas(FLAGS.alphas)
    rows = sweep(values, alphas, mode=FLAGS.mode)
  except (ValueError, FileNotFoundError, loop.TrainingDivergedError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  columns = ["alpha", "reward", "factuality", "rouge2", "teacher_kl",
             "length"]
  columns = [c for c in columns if c in rows[0]]
  print(" ".join(f"{c:>11s}" for c in columns))
  for row in rows:
    print(" ".join(f"{row[c]:11.4f}" for c in columns))
  print(f"\nwrote {values['workdir']}/sweep.csv, sweep.json, sweep.png")
  return 0


if __name__ == "__main__":
  app.run(main)
