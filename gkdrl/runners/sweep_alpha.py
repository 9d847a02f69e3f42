r"""Trains gkd_rl once per alpha, everything else equal, then compares.

    python -m gkdrl.runners.sweep_alpha --alphas=0,0.05,0.1,0.25,0.5,1 \
        --workdir=runs/sweep
    python -m gkdrl.runners.sweep_alpha --vectorized ...   # all at once

Each alpha trains in <workdir>/alpha_<alpha> (resumable like train). Writes
<workdir>/sweep.csv and sweep.json (one row per alpha with the evaluation
keys) and sweep.png: the task reward against ROUGE-2 and against teacher KL,
one labelled point per alpha, with the teacher and the starting student as
reference points (the paper's RL + GKD figure).

With --vectorized every alpha trains at once, one student per alpha, as one
stacked agent (`gkdrl.agents.make_stacked_agent`: their parameters and
optimizer states stacked on a leading axis [A]) driven by the same loop as
train (`gkdrl.runners.loop.train`): each step samples from the A students
in one compiled call, scores the A * B completions in one reward call, and
updates every student in one compiled, vmapped update in which alpha is a
traced value. Each alpha gets the same data, the same PRNG keys and the
same loss as its sequential run, so it ends within float tolerance of it;
the teacher and the reward are computed for every alpha (at alpha = 0 and
1 the unused one is swapped out before use). The stacked state is saved in
<workdir>/checkpoints, and rerunning the same command resumes from it (with
the same alphas). It pays off for small models on one device, where one
step of one student leaves the device mostly idle; memory grows with A. It
writes the same files per alpha (config.json, metrics.jsonl, eval/ with the
periodic evaluations of --eval_every and the sample files, tensorboard/
with --log_to=tensorboard, student_hf/) and the same tables.
"""

import csv
import dataclasses
import pathlib
import sys

from absl import app
from absl import flags
import jax

from gkdrl import agents
from gkdrl import networks
from gkdrl import validation
from gkdrl.agents import stacked
from gkdrl.runners import checkpointing
from gkdrl.runners import compilation
from gkdrl.runners import cpu_memory
from gkdrl.runners import flags_lib
from gkdrl.runners import loggers
from gkdrl.runners import loop
from gkdrl.runners import plots
from gkdrl.runners import setup
from gkdrl.runners import train  # defines the training flags
from gkdrl.runners import workdir as workdir_lib

flags.DEFINE_list("alphas", ["0", "0.05", "0.1", "0.25", "0.5", "1"],
                  "Teacher weights to train, each in [0, 1].")
flags.DEFINE_enum("mode", "greedy", ["greedy", "sample"],
                  "Decoding mode whose metrics go into the table and plot.")
flags.DEFINE_bool("vectorized", False,
                  "Train every alpha at once in one compiled program (one "
                  "student per alpha; small models on one device), "
                  "resumable from <workdir>/checkpoints.")
flags.DEFINE_float("adaptive_target", None,
                   "If set, one more gkd_rl run with alpha_schedule=adaptive "
                   "and this target_teacher_kl (> 0), starting at --alpha, "
                   "plotted beside the fixed alphas as a distinct marker.")
FLAGS = flags.FLAGS


def parse_alphas(values) -> list[float]:
  """The --alphas entries as floats: numbers in [0, 1], each at most once."""
  alphas = []
  for value in values:
    try:
      alphas.append(float(value))
    except ValueError:
      raise ValueError(f"--alphas entry {value!r} is not a number.") from None
  if not alphas:
    raise ValueError("--alphas is empty.")
  for alpha in alphas:
    if not 0.0 <= alpha <= 1.0:
      raise ValueError(f"--alphas entry {alpha!r} is outside [0, 1].")
  return stacked.check_alphas(alphas)


def alpha_workdir(root: pathlib.Path, alpha: float) -> pathlib.Path:
  return root / f"alpha_{alpha:g}"


def adaptive_workdir(root: pathlib.Path, target: float) -> pathlib.Path:
  return root / f"adaptive_kl_{target:g}"


def sweep(values: dict, alphas: list[float], *, mode: str = "greedy",
          progress: bool = True, vectorized: bool = False,
          adaptive_target: float | None = None) -> list[dict]:
  """Runs the sweep; returns one row per alpha (and writes the outputs).

  With `adaptive_target`, one more run holds the teacher KL near it
  (`alpha_schedule="adaptive"`); its row, last, has alpha "adaptive" and
  the target as "target_teacher_kl".
  """
  root = pathlib.Path(values["workdir"])
  if adaptive_target is not None:
    validation.check_positive("adaptive_target", adaptive_target)
  if vectorized:
    summaries = train_vectorized(values, alphas, progress=progress)
  else:
    shared = {}
    summaries = [train.run(dict(values, agent="gkd_rl", alpha=alpha,
                                workdir=str(alpha_workdir(root, alpha))),
                           progress=progress, shared=shared)
                 for alpha in alphas]
  rows = [{"alpha": alpha, "workdir": str(alpha_workdir(root, alpha)),
           **summary["final"][mode]}
          for alpha, summary in zip(alphas, summaries)]
  summary = summaries[-1]
  adaptive = []
  if adaptive_target is not None:
    workdir = str(adaptive_workdir(root, adaptive_target))
    result = train.run(dict(values, agent="gkd_rl",
                            alpha_schedule="adaptive",
                            target_teacher_kl=adaptive_target,
                            workdir=workdir), progress=progress)
    adaptive = [{"alpha": "adaptive", "target_teacher_kl": adaptive_target,
                 "workdir": workdir, **result["final"][mode]}]
  references = {"teacher": summary["teacher"][mode],
                "student start": summary["initial"][mode]}
  if jax.process_index() != 0:  # on several hosts, process 0 writes
    return rows
  checkpointing.write_json(root / "sweep.json",
                           {"mode": mode, "rows": rows + adaptive,
                            "references": references})
  keys = sorted({k for row in rows + adaptive for k in row}
                - {"alpha", "workdir"})
  with (root / "sweep.csv").open("w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=["alpha", *keys, "workdir"])
    writer.writeheader()
    for row in rows + adaptive:
      writer.writerow(row)
  reward_key = "factuality" if "factuality" in rows[0] else "reward"
  plots.plot_frontier(rows, references, root / "sweep.png",
                      reward_key=reward_key, adaptive=adaptive,
                      title=f"alpha sweep on {values['task']} ({mode})")
  return rows + adaptive


def _check_same_alphas(root: pathlib.Path, alphas: list[float]) -> None:
  """A vectorized run resumes only with the alphas it was started with."""
  path = root / "vectorized.json"
  if (root / "checkpoints").exists() and path.exists():
    before = checkpointing.read_json(path)["alphas"]
    if before != alphas:
      raise ValueError(
          f"--alphas={','.join(f'{a:g}' for a in alphas)} is not allowed; "
          f"{root} holds a vectorized run of alphas "
          f"{','.join(f'{a:g}' for a in before)}: pass those to resume it, "
          "or a new --workdir.")
  checkpointing.write_json(path, {"alphas": alphas})


def train_vectorized(values: dict, alphas: list[float], *,
                     progress: bool = True) -> list[dict]:
  """Trains gkd_rl at every alpha at once; returns train.run-like summaries.

  Args:
    values: flag values (see `train.flag_values`); "alpha" is ignored.
    alphas: the teacher weights, one student each, distinct.
    progress: show progress bars.

  Returns:
    One {"config", "teacher", "initial", "final"} dict per alpha.
  """
  root = pathlib.Path(values["workdir"])
  if values.get("mesh"):
    raise ValueError(f"--mesh={values['mesh']!r}: --vectorized runs on one "
                     "device; sweep sequentially to use a mesh.")
  alphas = stacked.check_alphas(alphas)
  loop_config = loop.LoopConfig(
      steps=values["steps"], batch_size=values["batch_size"],
      seed=values["seed"], log_every=values["log_every"],
      save_every=values["save_every"], progress=progress,
      eval_every=values.get("eval_every", 0), log_to=values.get("log_to"),
      async_rollouts=values.get("async_rollouts", False))
  if "wandb" in loop_config.log_to:
    validation.fail("--log_to", "wandb", "--vectorized logs to jsonl and "
                    "tensorboard (one W&B run per alpha needs the "
                    "sequential sweep)")
  cpu_memory.keep_scratch_memory(values.get("cpu_scratch_reuse", True))
  compilation.use_cache(values.get("compilation_cache", True),
                        values["cache_dir"])
  task_seed = values.get("task_seed")
  task, task_kwargs = setup.make_task(
      values["task"], data_files=values["data_files"],
      model_path=values["student"],
      seed=values["seed"] if task_seed is None else task_seed,
      skip_bad_rows=values.get("skip_bad_rows", False))
  # alpha strictly inside (0, 1) so the config asks for teacher and reward.
  config = flags_lib.agent_config(
      "gkd_rl", dict(values, alpha=0.5),
      default_max_new_tokens=task.max_target_tokens,
      learning_rate=values["learning_rate"],
      warmup_steps=values["warmup_steps"], steps=values["steps"])
  reward = setup.make_reward(values["reward"], task,
                             entailment_model=values["entailment_model"],
                             length_penalty=values["length_penalty"])
  models = setup.load_models(
      task=task, task_name=values["task"], task_kwargs=task_kwargs,
      teacher=values["teacher"], student=values["student"],
      cache_dir=values["cache_dir"], progress=progress)
  setup.check_completion_length(models, task, config.max_new_tokens)
  agent = agents.make_stacked_agent(
      config, alphas, student=models.student, teacher=models.teacher,
      tokenizer=task.tokenizer, reward=reward)
  _check_same_alphas(root, alphas)
  names = [alpha_workdir(root, alpha).name for alpha in alphas]
  resolved = [_resolved(values, root, alpha, config, models)
              for alpha in alphas]
  alpha_loggers = AlphaLoggers({
      name: loggers.make_loggers(
          loop_config.log_to, root / name, run_config=run_config,
          resume_step=max(checkpointing.saved_steps(root), default=0))
      for name, run_config in zip(names, resolved)})
  evaluate = train.make_evaluate_with_samples(values, task, models, reward,
                                              config.max_new_tokens)

  def evaluate_each(stacked_params):
    """({alpha dir: metrics}, {alpha dir: samples}) of every student."""
    results = {name: evaluate(models.student,
                              stacked.unstack(stacked_params, i))
               for i, name in enumerate(names)}
    return ({name: r[0] for name, r in results.items()},
            {name: r[1] for name, r in results.items()})

  try:
    # The reference evaluations first, at step 0, as `train` logs them.
    references = {name: evaluate(model, params) for name, model, params in (
        ("teacher", models.teacher, models.teacher_params),
        ("initial", models.student, models.student_params))}
    for name, result in references.items():
      alpha_loggers.evaluation(name, 0, *(
          {alpha_dir: part for alpha_dir in names} for part in result))
    state = loop.train(
        agent=agent, state=agent.init(models.student_params), task=task,
        config=loop_config, workdir=root,
        teacher_params=models.teacher_params,
        reward_params=setup.init_reward_params(reward, values["seed"]),
        evaluate_fn=evaluate_each,
        split_metrics=lambda m: dict(zip(names,
                                         stacked.split_metrics(m, alphas))),
        loggers=alpha_loggers)
    return _write_alpha_outputs(values, alphas, resolved, models, task,
                                references, state.params)
  finally:
    alpha_loggers.close()


class AlphaLoggers(loggers.Loggers):
  """One `Loggers` per alpha: the loop's `<alpha dir>/<key>` metrics go to
  that alpha's loggers as `<key>`."""

  def __init__(self, by_name: dict[str, loggers.Loggers]):
    super().__init__(list(by_name.values()))
    self.by_name = by_name

  def scalars(self, step: int, values) -> None:
    for name, logger in self.by_name.items():
      prefix = f"{name}/"
      logger.scalars(step, {k[len(prefix):]: v for k, v in values.items()
                            if k.startswith(prefix)})

  def evaluation(self, name: str, step: int, metrics, samples=None) -> None:
    """`metrics` and `samples` are {alpha dir: that student's}."""
    for alpha_dir, logger in self.by_name.items():
      logger.evaluation(name, step, metrics[alpha_dir],
                        (samples or {}).get(alpha_dir))


def _resolved(values, root, alpha, config, models) -> dict:
  """The config.json of one alpha of a vectorized sweep."""
  return {**values, "agent": "gkd_rl", "alpha": alpha,
          "workdir": str(alpha_workdir(root, alpha)), "vectorized": True,
          "agent_config": dataclasses.asdict(
              dataclasses.replace(config, alpha=alpha)),
          "student_path": models.student_path,
          "teacher_path": models.teacher_path}


def _write_alpha_outputs(values, alphas, resolved, models, task, references,
                         stacked_params) -> list[dict]:
  """Each alpha's config.json and student_hf/; its summary (the loop and
  the loggers wrote eval/)."""
  root = pathlib.Path(values["workdir"])
  summaries = []
  for i, alpha in enumerate(alphas):
    workdir = alpha_workdir(root, alpha)
    params = jax.device_get(stacked.unstack(stacked_params, i))
    checkpointing.write_json(workdir / "config.json", resolved[i])
    final = checkpointing.read_json(workdir / "eval" / "final.json")
    networks.save_pretrained(models.student, params, workdir / "student_hf",
                             tokenizer=task.tokenizer)
    summaries.append({"config": resolved[i],
                      "teacher": references["teacher"][0],
                      "initial": references["initial"][0],
                      "final": {k: v for k, v in final.items()
                                if k != "step"}})
  return summaries


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  flags_lib.quiet_logs()
  values = train.flag_values()
  if FLAGS["workdir"].using_default_value:
    values["workdir"] = "runs/sweep"
  try:
    if FLAGS["agent"].present and (agents.AGENT_CONFIGS[FLAGS.agent]
                                   is not agents.GKDRLConfig):
      raise ValueError(f"--agent={FLAGS.agent!r}: sweep_alpha trains gkd_rl.")
    alphas = parse_alphas(FLAGS.alphas)
    rows = sweep(values, alphas, mode=FLAGS.mode,
                 vectorized=FLAGS.vectorized,
                 adaptive_target=FLAGS.adaptive_target)
  except (ValueError, FileNotFoundError, loop.TrainingDivergedError,
          workdir_lib.WorkdirLockedError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(compilation.summary(), file=sys.stderr)
  print(cpu_memory.summary(), file=sys.stderr)
  columns = ["alpha", "reward", "factuality", "rouge2", "teacher_kl",
             "length"]
  columns = [c for c in columns if c in rows[0]]
  print(" ".join(f"{c:>11s}" for c in columns))
  for row in rows:
    print(" ".join(f"{row[c]:11s}" if isinstance(row[c], str)
                   else f"{row[c]:11.4f}" for c in columns))
  print(f"\nwrote {values['workdir']}/sweep.csv, sweep.json, sweep.png")
  return 0


if __name__ == "__main__":
  app.run(main)
