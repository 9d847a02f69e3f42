r"""Trains a student against a teacher and a reward.

    python -m gkdrl.runners.train                       # the default job
    python -m gkdrl.runners.train --agent=gkd --divergence=reverse_kl \
        --lmbda=1 --steps=300 --workdir=runs/gkd_rkl

With no flags: `gkd_rl` (alpha 0.5, JSD(0.9)) on the built-in `facts` task
with the built-in teacher and student (trained once and cached), then a
before/after table. Writes into --workdir: config.json, metrics.jsonl,
checkpoints/, eval/{teacher,initial,final}.json and student_hf/. Rerunning
with the same --workdir resumes from the last intact checkpoint, with the
same settings (see `workdir.SAFE_TO_CHANGE` for what may change) unless
--force_new_run moves the previous run aside; a second process on the same
--workdir is refused.
"""

import dataclasses
import pathlib
import sys
import time
from typing import Any

from absl import app
from absl import flags
from absl import logging
import jax

from gkdrl import agents
from gkdrl import evaluation
from gkdrl import networks
from gkdrl import parallel
from gkdrl.runners import checkpointing
from gkdrl.runners import flags_lib
from gkdrl.runners import loop
from gkdrl.runners import setup
from gkdrl.runners import workdir as workdir_lib

flags_lib.define_model_flags()
flags_lib.define_agent_flags()
flags.DEFINE_string("workdir", "runs/train", "Directory of this run.")
FLAGS = flags.FLAGS

TABLE_COLUMNS = ("reward", "factuality", "accuracy", "rouge2", "teacher_kl",
                 "self_bleu", "length")


RUN_FLAGS = sorted(set(flags_lib.AGENT_FIELDS) | {
    "agent", "task", "data_files", "teacher", "student", "cache_dir",
    "seed", "task_seed", "eval_examples", "eval_samples_per_prompt", "reward",
    "entailment_model", "length_penalty", "steps", "batch_size",
    "learning_rate", "warmup_steps", "log_every", "eval_every",
    "save_every", "workdir", "mesh", "force_new_run"})


def flag_values() -> dict[str, Any]:
  """The parsed flags of this program as a plain dict."""
  return {name: FLAGS[name].value for name in RUN_FLAGS}


def default_values(**overrides) -> dict[str, Any]:
  """The flags' defaults as a dict (for calling `run` from Python)."""
  values = {name: FLAGS[name].default for name in RUN_FLAGS}
  unknown = set(overrides) - set(values)
  if unknown:
    raise ValueError(f"Unknown settings {sorted(unknown)}; known: "
                     f"{RUN_FLAGS}.")
  values.update(overrides)
  return values


def make_evaluate(values: dict[str, Any], task, models, reward,
                  max_new_tokens: int):
  """`evaluate(model, params)` with the run's evaluation settings."""
  def evaluate(model, params):
    return evaluation.evaluate(
        model=model, params=params, task=task,
        num_examples=values["eval_examples"], max_new_tokens=max_new_tokens,
        teacher=models.teacher, teacher_params=models.teacher_params,
        reward=reward, samples_per_prompt=values["eval_samples_per_prompt"],
        seed=values["seed"])
  return evaluate


def run(values: dict[str, Any], *, progress: bool = True,
        shared: dict | None = None) -> dict[str, Any]:
  """Runs one training described by flag `values`; returns its summary.

  Args:
    values: flag values (see `flag_values`).
    progress: show progress bars.
    shared: a cache of task, models and evaluations reused across calls
      with the same task and models (sweep_alpha passes one dict).

  Returns:
    {"config": ..., "teacher": eval, "initial": eval, "final": eval}.
  """
  shared = {} if shared is None else shared
  workdir = pathlib.Path(values["workdir"])
  # Validate everything cheap before any expensive work.
  loop_config = loop.LoopConfig(
      steps=values["steps"], batch_size=values["batch_size"],
      seed=values["seed"], log_every=values["log_every"],
      eval_every=values["eval_every"], save_every=values["save_every"],
      progress=progress)
  task_seed = values.get("task_seed")
  task_seed = values["seed"] if task_seed is None else task_seed
  key = (values["task"], tuple(values["data_files"] or ()), task_seed,
         values["student"], values["teacher"], values["cache_dir"])
  if shared.get("key") != key:
    shared.clear()
    shared["key"] = key
    shared["task"], shared["task_kwargs"] = setup.make_task(
        values["task"], data_files=values["data_files"],
        model_path=values["student"], seed=task_seed)
  mesh = None
  if values.get("mesh"):
    parallel.initialize_distributed()
    mesh = parallel.make_mesh(values["mesh"])
  task = shared["task"]
  config = flags_lib.agent_config(
      values["agent"], values,
      default_max_new_tokens=task.max_target_tokens,
      learning_rate=values["learning_rate"],
      warmup_steps=values["warmup_steps"], steps=values["steps"])
  if mesh is not None:
    rows = values["batch_size"] * getattr(config, "samples_per_prompt", 1)
    shards = mesh.shape["data"] * mesh.shape["fsdp"]
    if rows % shards:
      raise ValueError(
          f"--batch_size={values['batch_size']} gives {rows} rows per batch, "
          f"which --mesh={values['mesh']!r} cannot split into {shards} "
          "equal data shards (data * fsdp).")
  reward = setup.make_reward(values["reward"], task,
                             entailment_model=values["entailment_model"],
                             length_penalty=values["length_penalty"])
  if "models" not in shared:
    shared["models"] = setup.load_models(
        task=task, task_name=values["task"],
        task_kwargs=shared["task_kwargs"], teacher=values["teacher"],
        student=values["student"], cache_dir=values["cache_dir"],
        progress=progress)
  models = shared["models"]
  agent = agents.make_agent(config, student=models.student,
                            teacher=models.teacher, tokenizer=task.tokenizer,
                            reward=reward)
  reward_params = setup.init_reward_params(
      reward if agent.uses_reward else None, values["seed"])

  workdir.mkdir(parents=True, exist_ok=True)
  resolved = {**values, "agent_config": dataclasses.asdict(config),
              "student_path": models.student_path,
              "teacher_path": models.teacher_path}
  with workdir_lib.Lock(workdir):
    # Refuses a resume under changed settings before config.json changes.
    workdir_lib.prepare(workdir, resolved, steps=values["steps"],
                        force_new_run=values.get("force_new_run", False))
    # Processes of a multi-host run share the workdir: the first writes.
    lead = jax.process_index() == 0
    if lead:
      checkpointing.write_json(workdir / "config.json", resolved)

    evaluate = make_evaluate(values, task, models, reward,
                             config.max_new_tokens)

    # The reference evaluations depend on every setting `evaluate` reads.
    eval_key = tuple(values[k] for k in (
        "seed", "eval_examples", "eval_samples_per_prompt", "reward",
        "entailment_model", "length_penalty")) + (config.max_new_tokens,)
    references = shared.setdefault("references", {})
    for name, model, params in (
        ("teacher", models.teacher, models.teacher_params),
        ("initial", models.student, models.student_params)):
      if (name, eval_key) not in references:
        references[name, eval_key] = evaluate(model, params)
      if lead:
        checkpointing.write_json(workdir / "eval" / f"{name}.json",
                                 {"step": 0, **references[name, eval_key]})

    start = time.time()
    state = loop.train(
        agent=agent, state=agent.init(models.student_params), task=task,
        config=loop_config, workdir=workdir,
        teacher_params=models.teacher_params, reward_params=reward_params,
        evaluate_fn=lambda p: evaluate(models.student, p), mesh=mesh)
    logging.info("Training took %.1f s.", time.time() - start)
    # Sharded parameters of a multi-host mesh are gathered by all processes.
    params = jax.device_get(parallel.gather(state.params))
    if lead:
      networks.save_pretrained(models.student, params,
                               workdir / "student_hf",
                               tokenizer=task.tokenizer)
    # loop.train returns once final.json is written (by process 0).
    final = checkpointing.read_json(workdir / "eval" / "final.json")
    return {"config": resolved, "teacher": references["teacher", eval_key],
            "initial": references["initial", eval_key],
            "final": {k: v for k, v in final.items() if k != "step"}}


def summary_table(summary: dict[str, Any], mode: str = "greedy") -> str:
  rows = {"teacher": summary["teacher"][mode],
          "student before": summary["initial"][mode],
          "student after": summary["final"][mode]}
  columns = [c for c in TABLE_COLUMNS if c in rows["student after"]]
  return evaluation.format_table(rows, columns=columns)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  flags_lib.quiet_logs()
  try:
    summary = run(flag_values())
  except (ValueError, FileNotFoundError, loop.TrainingDivergedError,
          workdir_lib.WorkdirLockedError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  for mode in summary["final"]:
    print(f"\n{mode} decoding ({FLAGS.workdir}):")
    print(summary_table(summary, mode))
  return 0


if __name__ == "__main__":
  app.run(main)
