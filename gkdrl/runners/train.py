r"""Trains a student against a teacher and a reward.

    python -m gkdrl.runners.train                       # the default job
    python -m gkdrl.runners.train --agent=gkd --divergence=reverse_kl \
        --lmbda=1 --steps=300 --workdir=runs/gkd_rkl

With no flags: `gkd_rl` (alpha 0.5, JSD(0.9)) on the built-in `facts` task
with the built-in teacher and student (trained once and cached), then a
before/after table. Writes into --workdir: config.json, metrics.jsonl,
checkpoints/, eval/{teacher,initial,final}.json, eval/samples_*.jsonl,
plots.png and student_hf/ (and tensorboard/, wandb/ with --log_to; with
--lora_rank student_hf/ is the merged model and student_lora/ the adapters
in the PEFT layout, for Llama/Qwen2-family students). Rerunning
with the same --workdir resumes from the last intact checkpoint, with the
same settings (see `workdir.SAFE_TO_CHANGE` for what may change) unless
--force_new_run moves the previous run aside; a second process on the same
--workdir is refused.

From Python: `run(RunConfig(...))`, or `run(default_values(steps=300))`
with the flags' flat settings. Every flag is a field of `RunConfig`
(`gkdrl.runners.config`).
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
from gkdrl import validation
from gkdrl.runners import checkpointing
from gkdrl.runners import compilation
from gkdrl.runners import config as config_lib
from gkdrl.runners import cpu_memory
from gkdrl.runners import flags_lib
from gkdrl.runners import loggers
from gkdrl.runners import loop
from gkdrl.runners import plots
from gkdrl.runners import setup
from gkdrl.runners import workdir as workdir_lib
from gkdrl.tasks import teacher_cache

flags_lib.define_model_flags()
flags_lib.define_agent_flags()
flags_lib.define_workdir_flag()
FLAGS = flags.FLAGS

EVAL_SAMPLES = 4  # completions per decoding mode shown with each evaluation
TABLE_COLUMNS = ("reward", "factuality", "accuracy", "rouge2", "teacher_kl",
                 "self_bleu", "length")

# Every flat setting of a run (a flag each), from `config.RunConfig`.
RUN_FLAGS = config_lib.setting_names()
flag_values = flags_lib.flag_values
default_values = flags_lib.default_values
RunConfig = config_lib.RunConfig


def make_evaluate(config: RunConfig | dict[str, Any], task, models, reward,
                  max_new_tokens: int | None = None):
  """`evaluate(model, params) -> metrics` with the run's settings.

  `config` may be flat settings, with `max_new_tokens` given apart.
  """
  evaluate = make_evaluate_with_samples(config, task, models, reward,
                                        max_new_tokens, num_samples=0)
  return lambda model, params: evaluate(model, params)[0]


def make_evaluate_with_samples(config: RunConfig | dict[str, Any], task,
                               models, reward,
                               max_new_tokens: int | None = None,
                               num_samples: int = EVAL_SAMPLES):
  """`evaluate(model, params) -> (metrics, samples)`, the run's settings."""
  if not isinstance(config, RunConfig):
    config = config_lib.from_values(
        {k: v for k, v in config.items() if k in RUN_FLAGS},
        default_max_new_tokens=max_new_tokens)
  if max_new_tokens is None:
    max_new_tokens = config.agent.rollout.max_new_tokens

  # A teacher with its own tokenizer reads other prompts: it is neither
  # evaluated on the task's tokens nor compared with the student id by id.
  teacher, teacher_params = models.teacher, models.teacher_params
  if models.teacher_tokenizer is not None:
    teacher = teacher_params = None

  def evaluate(model, params):
    return evaluation.evaluate_with_samples(
        num_samples=num_samples, model=model, params=params, task=task,
        num_examples=config.eval.eval_examples,
        max_new_tokens=max_new_tokens,
        teacher=teacher, teacher_params=teacher_params, reward=reward,
        samples_per_prompt=config.eval.eval_samples_per_prompt,
        seed=config.loop.seed)
  return evaluate


def _task(config: RunConfig, shared: dict):
  """The run's task, from `shared` when its inputs are the same."""
  inputs = config.inputs
  key = (inputs.task, tuple(inputs.data_files or ()), config.task_seed,
         inputs.student, inputs.teacher, inputs.cache_dir,
         inputs.skip_bad_rows)
  if shared.get("key") != key:
    shared.clear()
    shared["key"] = key
    shared["task"], shared["task_kwargs"] = setup.make_task(
        inputs.task, data_files=inputs.data_files,
        model_path=inputs.student, seed=config.task_seed,
        skip_bad_rows=inputs.skip_bad_rows)
  return shared["task"]


def _mesh(config: RunConfig):
  """The run's device mesh (None without --mesh), once its batch splits."""
  if not config.mesh:
    return None
  parallel.initialize_distributed()
  sizes = parallel.parse_mesh(config.mesh)
  rows = config.loop.batch_size * getattr(config.agent,
                                          "samples_per_prompt", 1)
  shards = sizes.get("data", 1) * sizes.get("fsdp", 1)
  if rows % shards:
    validation.fail(
        "--batch_size", config.loop.batch_size,
        f"it gives {rows} rows per batch, which --mesh={config.mesh!r} "
        f"cannot split into {shards} equal data shards (data * fsdp)")
  return parallel.make_mesh(config.mesh)


def resolve(config: RunConfig | dict[str, Any], shared: dict
            ) -> tuple[RunConfig, Any]:
  """(config, task): flat settings become a `RunConfig`.

  Everything cheap is validated before the task is built; then an unset
  `max_new_tokens` becomes the task's longest target.
  """
  if isinstance(config, RunConfig):
    return config, _task(config, shared)
  task = _task(config_lib.from_values(config), shared)
  return config_lib.from_values(
      config, default_max_new_tokens=task.max_target_tokens), task


def run(config: RunConfig | dict[str, Any], *, progress: bool = True,
        shared: dict | None = None) -> dict[str, Any]:
  """Runs one training; returns its summary.

  Args:
    config: the run's `RunConfig`, or its flat settings (see
      `flag_values`, `default_values`), where an unset `max_new_tokens` is
      the task's longest target.
    progress: show progress bars.
    shared: a cache of task, models and evaluations reused across calls
      with the same task and models (sweep_alpha passes one dict).

  Returns:
    {"config": ..., "teacher": eval, "initial": eval, "final": eval}.
  """
  shared = {} if shared is None else shared
  config, task = resolve(config, shared)
  cpu_memory.keep_scratch_memory(config.cpu_scratch_reuse)
  compilation.use_cache(config.compilation_cache, config.inputs.cache_dir)
  mesh = _mesh(config)
  reward = setup.make_reward(config.reward.reward, task,
                             entailment_model=config.reward.entailment_model,
                             length_penalty=config.reward.length_penalty,
                             mesh=mesh)
  inputs = config.inputs
  # With an offline teacher cache the teacher is never loaded.
  cache = getattr(config.agent, "teacher_cache", None)
  if cache:
    seed = (config.task_seed if inputs.task in setup.GENERATED_TASKS
            else None)
    teacher_cache.check_identity(cache, teacher_cache.run_identity(
        task, inputs.task, seed, inputs.teacher))
  if "models" not in shared or (not cache
                                and shared["models"].teacher is None):
    shared["models"] = setup.load_models(
        task=task, task_name=inputs.task, task_kwargs=shared["task_kwargs"],
        teacher=inputs.teacher, student=inputs.student,
        cache_dir=inputs.cache_dir, need_teacher=not cache,
        progress=progress, cross_tokenizer=getattr(
            config.agent, "cross_tokenizer", "none") != "none")
  models = shared["models"]
  setup.check_completion_length(models, task,
                                config.agent.rollout.max_new_tokens)
  agent = agents.make_agent(config.agent, student=models.student,
                            teacher=models.teacher, tokenizer=task.tokenizer,
                            reward=reward,
                            teacher_tokenizer=models.teacher_tokenizer)
  reward_params = setup.init_reward_params(
      reward if agent.uses_reward else None, config.loop.seed)

  workdir = pathlib.Path(config.workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  resolved = describe(config, models)
  with workdir_lib.Lock(workdir):
    # Refuses a resume under changed settings before config.json changes.
    workdir_lib.prepare(workdir, resolved, steps=config.loop.steps,
                        force_new_run=config.force_new_run,
                        defaults=default_settings(config))
    # Processes of a multi-host run share the workdir: the first writes.
    if jax.process_index() == 0:
      checkpointing.write_json(workdir / "config.json", resolved)
    summary = _train(config, task, models, agent, reward, reward_params,
                     mesh=mesh, shared=shared, progress=progress)
  return {"config": resolved, **summary}


def _train(config: RunConfig, task, models, agent, reward, reward_params, *,
           mesh, shared: dict, progress: bool) -> dict[str, Any]:
  """The reference evaluations, the training and the final evaluation."""
  workdir = pathlib.Path(config.workdir)
  lead = jax.process_index() == 0
  evaluate = make_evaluate_with_samples(config, task, models, reward)
  run_loggers = None
  if lead:
    run_loggers = loggers.make_loggers(
        config.loop.log_to, workdir,
        run_config=checkpointing.read_json(workdir / "config.json"),
        resume_step=max(checkpointing.saved_steps(workdir), default=0))
  # The reference evaluations depend on every setting `evaluate` reads.
  eval_key = (config.loop.seed, config.eval, config.reward,
              config.agent.rollout.max_new_tokens)
  references = shared.setdefault("references", {})
  for name, model, params in (
      ("teacher", models.teacher if models.teacher_tokenizer is None
       else None, models.teacher_params),
      ("initial", models.student, models.student_params)):
    # No teacher loaded (a teacher cache), or one with its own tokenizer.
    if model is None:
      references[name, eval_key] = (None, None)  # (metrics, samples)
      continue
    if (name, eval_key) not in references:
      references[name, eval_key] = evaluate(model, params)
    if lead:
      run_loggers.evaluation(name, 0, *references[name, eval_key])

  start = time.time()
  state = loop.train(
      agent=agent, state=agent.init(models.student_params), task=task,
      config=dataclasses.replace(config.loop, progress=progress),
      workdir=workdir, teacher_params=models.teacher_params,
      reward_params=reward_params,
      evaluate_fn=lambda p: evaluate(models.student, p), mesh=mesh,
      loggers=run_loggers)
  logging.info("Training took %.1f s.", time.time() - start)
  if lead:
    run_loggers.close()
    plots.plot_run(workdir)
  # Sharded parameters of a multi-host mesh are gathered by all processes.
  params = jax.device_get(parallel.gather(agent.model_params(state)))
  if lead:
    networks.save_pretrained(models.student, params, workdir / "student_hf",
                             tokenizer=task.tokenizer)
    lora = config.agent
    if lora.lora_rank and models.student.config.model_type != "gpt2":
      networks.save_adapters(
          models.student, parallel.gather(state.params),
          workdir / "student_lora", rank=lora.lora_rank,
          alpha=lora.lora_alpha, base_model=str(models.student_path))
  # loop.train returns once final.json is written (by process 0).
  final = checkpointing.read_json(workdir / "eval" / "final.json")
  return {"teacher": references["teacher", eval_key][0],
          "initial": references["initial", eval_key][0],
          "final": {k: v for k, v in final.items() if k != "step"}}


def describe(config: RunConfig, models) -> dict[str, Any]:
  """config.json: the flat settings, the agent's config and the models.

  "agent_config" is the agent config's fields with its rollout settings
  flat (`max_new_tokens`, ...) and its optimizer nested.
  """
  agent_config = dataclasses.asdict(config.agent)
  agent_config.update(agent_config.pop("rollout"))
  return {**config_lib.to_values(config), "agent_config": agent_config,
          "student_path": models.student_path,
          "teacher_path": models.teacher_path}


def default_settings(config: RunConfig) -> dict[str, Any]:
  """`describe`'s fields at their defaults, for config.json files that
  predate a setting (`workdir.config_differences`)."""
  agent_config = dataclasses.asdict(type(config.agent)())
  agent_config.update(agent_config.pop("rollout"))
  return {**config_lib.default_values(), "agent_config": agent_config}


def summary_table(summary: dict[str, Any], mode: str = "greedy") -> str:
  rows = {"teacher": summary["teacher"] and summary["teacher"][mode],
          "student before": summary["initial"][mode],
          "student after": summary["final"][mode]}
  rows = {k: v for k, v in rows.items() if v is not None}
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
  print(compilation.summary(), file=sys.stderr)
  print(cpu_memory.summary(), file=sys.stderr)
  for mode in summary["final"]:
    print(f"\n{mode} decoding ({FLAGS.workdir}):")
    print(summary_table(summary, mode))
  return 0


if __name__ == "__main__":
  app.run(main)
