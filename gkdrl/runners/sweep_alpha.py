r"""Trains gkd_rl once per alpha, everything else equal, then compares.

    python -m gkdrl.runners.sweep_alpha --alphas=0,0.05,0.1,0.25,0.5,1 \
        --workdir=runs/sweep
    python -m gkdrl.runners.sweep_alpha --vectorized ...   # all at once

Each alpha trains in <workdir>/alpha_<alpha> (resumable like train). Writes
<workdir>/sweep.csv and sweep.json (one row per alpha with the evaluation
keys) and sweep.png: the task reward against ROUGE-2 and against teacher KL,
one labelled point per alpha, with the teacher and the starting student as
reference points (the paper's RL + GKD figure).

With --vectorized every alpha trains at once, one student per alpha (their
parameters and optimizer states stacked on a leading axis [A]) beside one
teacher: each step samples from the A students in one compiled call, scores
the A * B completions in one reward call, and updates every student in one
compiled, vmapped update in which alpha is a traced value. Each alpha gets
the same data, the same PRNG keys (the sampling key of step s, and its
update key, are those of the sequential run) and the same loss, so it ends
within float tolerance of the sequential run of that alpha. Differences:
the teacher and the reward are computed for every alpha (at alpha = 0 and
1 the unused one is swapped out before use, so the loss and its gradient
are those of the sequential run), and no checkpoints are written (a killed
run starts over).
It pays off for small models on one device, where one step of one student
leaves the device mostly idle; memory grows with A. It writes the same
files per alpha (config.json, metrics.jsonl, eval/ without the periodic
evaluations, student_hf/) and the same tables.
"""

import csv
import dataclasses
import pathlib
import sys

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from gkdrl import agents
from gkdrl import networks
from gkdrl.agents import acting
from gkdrl.agents import base
from gkdrl.agents import optimizer as optimizer_lib
from gkdrl.runners import checkpointing
from gkdrl.runners import flags_lib
from gkdrl.runners import loop
from gkdrl.runners import plots
from gkdrl.runners import setup
from gkdrl.runners import train  # defines the training flags

flags.DEFINE_list("alphas", ["0", "0.05", "0.1", "0.25", "0.5", "1"],
                  "Teacher weights to train, each in [0, 1].")
flags.DEFINE_enum("mode", "greedy", ["greedy", "sample"],
                  "Decoding mode whose metrics go into the table and plot.")
flags.DEFINE_bool("vectorized", False,
                  "Train every alpha at once in one compiled program (one "
                  "student per alpha; small models on one device). No "
                  "checkpoints or resume.")
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


def alpha_workdir(root: pathlib.Path, alpha: float) -> pathlib.Path:
  return root / f"alpha_{alpha:g}"


def sweep(values: dict, alphas: list[float], *, mode: str = "greedy",
          progress: bool = True, vectorized: bool = False) -> list[dict]:
  """Runs the sweep; returns one row per alpha (and writes the outputs)."""
  root = pathlib.Path(values["workdir"])
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
  references = {"teacher": summary["teacher"][mode],
                "student start": summary["initial"][mode]}
  if jax.process_index() != 0:  # on several hosts, process 0 writes
    return rows
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


def make_alpha_loss(config: agents.GKDRLConfig, student,
                    teacher) -> base.LossFn:
  """gkd_rl's loss with alpha read from the input: `(teacher_params, alpha)`.

  The gkd_rl agent's own loss (`agents.make_gkd_rl_loss`), so that a traced
  alpha gives the loss and gradient of the agent with that alpha.
  """
  loss = agents.make_gkd_rl_loss(config, student, teacher)

  def loss_fn(params, state, batch, teacher_and_alpha, key):
    teacher_params, alpha = teacher_and_alpha
    return loss(params, state, batch, teacher_params, key, alpha=alpha)

  return loss_fn


def make_stacked_update(config: agents.GKDRLConfig, student, teacher):
  """`update(states [A], batches [A], teacher_params, alphas [A], key)`.

  One jitted program: the gkd_rl update vmapped over stacked states,
  batches and alphas, the teacher and the key shared. Donates the states.
  """
  update = base.make_update(
      make_alpha_loss(config, student, teacher),
      optimizer_lib.make_optimizer(config.optimizer), jit=False)

  def stacked(states, batches, teacher_params, alphas, key):
    base.log_compile("update_stacked", batch=batches)
    return jax.vmap(
        lambda s, b, a: update(s, b, (teacher_params, a), key))(
            states, batches, alphas)

  return jax.jit(stacked, donate_argnums=0)


def train_vectorized(values: dict, alphas: list[float], *,
                     progress: bool = True) -> list[dict]:
  """Trains gkd_rl at every alpha at once; returns train.run-like summaries.

  Args:
    values: flag values (see `train.flag_values`); "alpha" is ignored.
    alphas: the teacher weights, one student each.
    progress: show progress bars.

  Returns:
    One {"config", "teacher", "initial", "final"} dict per alpha.
  """
  root = pathlib.Path(values["workdir"])
  if values.get("mesh"):
    raise ValueError(f"--mesh={values['mesh']!r}: --vectorized runs on one "
                     "device; sweep sequentially to use a mesh.")
  loop_config = loop.LoopConfig(
      steps=values["steps"], batch_size=values["batch_size"],
      seed=values["seed"], log_every=values["log_every"],
      save_every=values["save_every"], progress=progress)
  task_seed = values.get("task_seed")
  task, task_kwargs = setup.make_task(
      values["task"], data_files=values["data_files"],
      model_path=values["student"],
      seed=values["seed"] if task_seed is None else task_seed)
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
  # The same model setup as the sequential agents (validates the config).
  agent = agents.make_agent(config, student=models.student,
                            teacher=models.teacher, tokenizer=task.tokenizer,
                            reward=reward)
  reward_params = setup.init_reward_params(reward, values["seed"])
  tokenizer = task.tokenizer
  eos_token_id = getattr(tokenizer, "eos_token_id", None)
  if eos_token_id is None:
    eos_token_id = models.student.config.eos_token_id
  pad_token_id = getattr(tokenizer, "pad_token_id", None)
  if pad_token_id is None:
    pad_token_id = eos_token_id

  num = len(alphas)
  state = agent.init(models.student_params)
  states = jax.tree.map(lambda x: jnp.stack([x] * num), state)  # [A, ...]
  alpha_array = jnp.asarray(alphas, jnp.float32)  # [A]
  update = make_stacked_update(config, models.student, models.teacher)
  for alpha in alphas:
    alpha_workdir(root, alpha).mkdir(parents=True, exist_ok=True)
  writers = [checkpointing.MetricsWriter(alpha_workdir(root, a))
             for a in alphas]
  batches = task.batches("train", loop_config.batch_size,
                         seed=loop_config.seed, num_epochs=None,
                         drop_remainder=True)
  root_key = jax.random.key(loop_config.seed)
  for step in tqdm.trange(1, loop_config.steps + 1, desc=f"{num} alphas",
                          disable=not progress, dynamic_ncols=True):
    # The keys and data of step `step` of loop.train, for every alpha.
    act_key, update_key = jax.random.split(jax.random.fold_in(root_key,
                                                              step))
    task_batch = acting.repeat_rows(next(batches), config.samples_per_prompt)
    batch = acting.sample_batch(
        models.student, states.params, act_key, task_batch, config=config,
        eos_token_id=eos_token_id, pad_token_id=pad_token_id,
        stacked=True)  # [A, B, ...]
    flat = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), batch)
    rewards = acting.score_batch(
        reward, reward_params, tokenizer, flat,
        list(task_batch.sources) * num, list(task_batch.targets) * num)
    batch = batch._replace(rewards=jnp.asarray(rewards).reshape(num, -1))
    states, metrics = update(states, batch, models.teacher_params,
                             alpha_array, update_key)
    metrics = jax.device_get(metrics)
    lengths = np.asarray(batch.completion_mask).sum(axis=-1).mean(axis=-1)
    for i, alpha in enumerate(alphas):
      loss = float(metrics["loss/total"][i])
      if not np.isfinite(loss):
        raise loop.TrainingDivergedError(
            f"Non-finite loss {loss} at step {step} for alpha={alpha:g}; "
            "training stopped (--vectorized writes no checkpoints).")
    if step % loop_config.log_every == 0 or step == loop_config.steps:
      for i, (alpha, writer) in enumerate(zip(alphas, writers)):
        # The keys the sequential run logs: no reward at alpha = 1, no
        # teacher at alpha = 0.
        unused = {1.0: "reward/mean", 0.0: "kl/teacher"}.get(alpha)
        writer.write(step, {"rollout/length": float(lengths[i]),
                            **{k: float(v[i]) for k, v in metrics.items()
                               if k != unused}})

  evaluate = train.make_evaluate(values, task, models, reward,
                                 config.max_new_tokens)

  teacher_eval = evaluate(models.teacher, models.teacher_params)
  initial_eval = evaluate(models.student, models.student_params)
  summaries = []
  for i, alpha in enumerate(alphas):
    workdir = alpha_workdir(root, alpha)
    params = jax.device_get(jax.tree.map(lambda x, i=i: x[i],
                                         states.params))
    resolved = {**values, "agent": "gkd_rl", "alpha": alpha,
                "workdir": str(workdir), "vectorized": True,
                "agent_config": dataclasses.asdict(
                    dataclasses.replace(config, alpha=alpha)),
                "student_path": models.student_path,
                "teacher_path": models.teacher_path}
    checkpointing.write_json(workdir / "config.json", resolved)
    final = evaluate(models.student, params)
    for name, result in (("teacher", teacher_eval), ("initial", initial_eval)):
      checkpointing.write_json(workdir / "eval" / f"{name}.json",
                               {"step": 0, **result})
    checkpointing.write_json(workdir / "eval" / "final.json",
                             {"step": loop_config.steps, **final})
    networks.save_pretrained(models.student, params, workdir / "student_hf",
                             tokenizer=tokenizer)
    summaries.append({"config": resolved, "teacher": teacher_eval,
                      "initial": initial_eval, "final": final})
  return summaries


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
    rows = sweep(values, alphas, mode=FLAGS.mode,
                 vectorized=FLAGS.vectorized)
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
