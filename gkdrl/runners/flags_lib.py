"""absl flags shared by the runners, and their translation to configs.

Agent-specific flags default to None, meaning "the agent config's default";
a flag that does not apply to the chosen agent is an error, so a typo in a
sweep never silently trains something else.
"""

import dataclasses

from absl import flags

from gkdrl import agents
from gkdrl import tasks
from gkdrl.losses import divergences
from gkdrl.runners import builtin

# Flags that map onto agent config fields of the same name.
AGENT_FIELDS = (
    "alpha", "divergence", "beta", "skew", "normalized", "lmbda",
    "sample_temperature", "teacher_temperature", "student_temperature",
    "baseline", "samples_per_prompt", "kl_mode", "ref_kl_coef", "ppo_epochs",
    "ppo_epsilon", "max_new_tokens", "top_k", "top_p", "reduction",
    "compute_dtype", "param_dtype", "remat", "loss_chunk_size",
)


def define_model_flags():
  flags.DEFINE_string("task", tasks.DEFAULT_TASK,
                      f"Task: one of {sorted(tasks.TASKS)}.")
  flags.DEFINE_list("data_files", None,
                    "Local json/jsonl/csv/parquet files in a hub task's "
                    "schema (instead of the Hugging Face hub).")
  flags.DEFINE_string("teacher", builtin.BUILTIN,
                      "'builtin' (built-in tasks), or a local Hugging Face "
                      "model directory or .gguf file.")
  flags.DEFINE_string("student", builtin.BUILTIN,
                      "'builtin' (built-in tasks), or a local Hugging Face "
                      "model directory or .gguf file.")
  flags.DEFINE_string("cache_dir", None,
                      "Cache of built-in models (default $GKDRL_CACHE_DIR "
                      "or ~/.cache/gkdrl).")
  flags.DEFINE_integer("seed", 0, "Seed of data, initialisation and "
                       "sampling.")
  flags.DEFINE_integer("task_seed", None,
                       "Seed of a generated task's data, and so of the "
                       "built-in models trained on it; unset uses --seed. "
                       "Fix it to compare training seeds on one dataset.")
  flags.DEFINE_integer("eval_examples", 128,
                       "Validation prompts per evaluation.")
  flags.DEFINE_integer("eval_samples_per_prompt", 4,
                       "Temperature-1 samples per prompt in evaluations "
                       "(for Self-BLEU).")


def define_agent_flags():
  """Training flags: the agent, its loss, the optimiser and the loop."""
  flags.DEFINE_enum("agent", "gkd_rl", sorted(agents.AGENT_CONFIGS),
                    "Which agent to train.")
  flags.DEFINE_float("alpha", None, "gkd_rl: teacher weight in [0, 1] "
                     "(default 0.5); 1 = pure GKD, 0 = pure RL.")
  flags.DEFINE_enum("divergence", None, sorted(divergences.DIVERGENCES),
                    "Token-level divergence (gkd, supervised_kd, gkd_rl).")
  flags.DEFINE_float("beta", None, "JSD(beta) coefficient in [0, 1] "
                     "(default 0.5 for gkd, 0.9 for gkd_rl).")
  flags.DEFINE_float("skew", None, "Skew KL mixture weight in [0, 1].")
  flags.DEFINE_bool("normalized", None,
                    "Divide JSD by beta * (1 - beta) (a gkdrl extension).")
  flags.DEFINE_float("lmbda", None, "gkd: student data fraction in [0, 1].")
  flags.DEFINE_float("sample_temperature", None,
                     "Rollout sampling temperature (default 1.0).")
  flags.DEFINE_float("teacher_temperature", None,
                     "Temperature of the teacher's target distribution.")
  flags.DEFINE_float("student_temperature", None,
                     "Temperature of the student in the divergence.")
  flags.DEFINE_string("baseline", None, "rl/gkd_rl: none, mean or rloo.")
  flags.DEFINE_integer("samples_per_prompt", None,
                       "rl/gkd_rl: samples per prompt (rloo needs >= 2).")
  flags.DEFINE_string("kl_mode", None, "gkd_rl: analytic or sampled.")
  flags.DEFINE_float("ref_kl_coef", None, "rl/gkd_rl: weight of KL(student "
                     "|| initial student).")
  flags.DEFINE_integer("ppo_epochs", None, "rl: gradient steps per rollout.")
  flags.DEFINE_float("ppo_epsilon", None, "rl: PPO clipping radius.")
  flags.DEFINE_integer("max_new_tokens", None,
                       "Most tokens per sampled completion (default: the "
                       "task's longest target).")
  flags.DEFINE_integer("top_k", None, "Sampling top-k (0 disables).")
  flags.DEFINE_float("top_p", None, "Sampling nucleus mass (1 disables).")
  flags.DEFINE_string("reduction", None, "sequence, token or sum.")
  flags.DEFINE_string("compute_dtype", None, "float32 or bfloat16.")
  flags.DEFINE_string("param_dtype", None,
                      "float32 or bfloat16: storage of the student's "
                      "parameters and optimizer state (divergences stay "
                      "float32).")
  flags.DEFINE_string("remat", None,
                      "none, dots or full: what the student's backward pass "
                      "stores per layer (default none: everything; dots: "
                      "the weight projections, attention recomputed; full: "
                      "each layer's input, the layer recomputed). Less "
                      "memory for more compute; same gradients.")
  flags.DEFINE_integer("loss_chunk_size", None,
                       "gkd/supervised_kd: positions per chunk of the "
                       "hidden-state distillation loss; gkd_rl: positions "
                       "per chunk of its divergence from logits (0: no "
                       "chunks; default: 128 when V >= 32768).")
  flags.DEFINE_string("reward", "default",
                      "Reward: 'default' (the task's own), a task reward "
                      "name (factuality, accuracy, ...), rouge1/rouge2/"
                      "rougeL, exact_match or entailment.")
  flags.DEFINE_string("entailment_model", None,
                      "Local NLI checkpoint for --reward=entailment.")
  flags.DEFINE_float("length_penalty", 0.0,
                     "Subtract this times the completion length in tokens.")
  flags.DEFINE_integer("steps", 500, "Training steps.")
  flags.DEFINE_integer("batch_size", 16, "Prompts per batch.")
  flags.DEFINE_float("learning_rate", 1e-3, "Peak learning rate.")
  flags.DEFINE_integer("warmup_steps", 10, "Learning-rate warmup steps.")
  flags.DEFINE_integer("log_every", 10, "Steps between metrics lines.")
  flags.DEFINE_integer("eval_every", 0,
                       "Steps between evaluations (0: only at the end).")
  flags.DEFINE_integer("save_every", 50, "Steps between checkpoints.")
  flags.DEFINE_bool("force_new_run", False,
                    "Start over in a --workdir that holds a run: move that "
                    "run's files into <workdir>/previous_run_<n>/ (nothing "
                    "is deleted) instead of resuming it.")
  flags.DEFINE_string("mesh", None,
                      "Device mesh, e.g. 'data:4,fsdp:2' or 'auto' (every "
                      "device on data); unset runs on one device. Rows of "
                      "each batch (batch_size * samples_per_prompt) must "
                      "divide by data * fsdp.")


def agent_config(name: str, values: dict, *, default_max_new_tokens: int,
                 learning_rate: float, warmup_steps: int, steps: int):
  """Builds the agent config from flag values (None = config default)."""
  cls = agents.AGENT_CONFIGS[name]
  fields = {f.name for f in dataclasses.fields(cls)}
  kwargs = {}
  for flag in AGENT_FIELDS:
    value = values.get(flag)
    if value is None:
      continue
    if flag not in fields:
      raise ValueError(f"--{flag}={value!r} does not apply to --agent="
                       f"{name}; its settings are {sorted(fields)}.")
    kwargs[flag] = value
  kwargs.setdefault("max_new_tokens", default_max_new_tokens)
  kwargs["optimizer"] = agents.OptimizerConfig(
      learning_rate=learning_rate, warmup_steps=warmup_steps,
      decay_steps=steps)
  return cls(**kwargs)


def quiet_logs() -> None:
  """Shows warnings and errors only, unless --verbosity was given.

  Orbax logs every checkpoint step at INFO, which would bury the progress
  bar and the results.
  """
  from absl import logging  # pylint: disable=g-import-not-at-top
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
