"""A training run's settings in one typed config, and their flat names.

    config = RunConfig(agent=agents.GKDConfig(lmbda=1.0, max_new_tokens=8),
                       loop=loop.LoopConfig(steps=300),
                       workdir="runs/gkd")
    train.run(config)

Every setting is a field of a frozen dataclass, with its default, its
validation and its documentation (the class docstring's Attributes) written
once there. The runners' flags are made from these fields (see
`gkdrl.runners.flags_lib`): a flag has its field's name and its help is the
field's documentation. `from_values` turns the flat `{flag name: value}`
dict of the flags (or of a Python caller) into a `RunConfig`.

Agent settings (`--alpha`, `--top_p`, `--learning_rate`, ...) are the
fields of the registered agent configs (`agents.AGENT_CONFIGS`), flattened
through their nested `rollout` and `optimizer` configs. Unset (None) means
the chosen agent's default; a setting the chosen agent does not read is an
error naming it and the agent.
"""

import dataclasses
import functools
from typing import Any

from gkdrl import agents
from gkdrl import tasks
from gkdrl import validation
from gkdrl.runners import builtin
from gkdrl.runners import fields
from gkdrl.runners import loop as loop_lib


@dataclasses.dataclass(frozen=True, kw_only=True)
class InputsConfig:
  """What a run starts from: the task and the two models.

  Attributes:
    task: the task, a name of `gkdrl.tasks.TASKS`.
    data_files: local json/jsonl/csv/parquet files in a hub task's schema
      (instead of the Hugging Face hub).
    teacher: 'builtin' (built-in tasks), or a local Hugging Face model
      directory or .gguf file.
    student: 'builtin' (built-in tasks), or a local Hugging Face model
      directory or .gguf file.
    cache_dir: cache of built-in models (default $GKDRL_CACHE_DIR or
      ~/.cache/gkdrl).
    task_seed: seed of a generated task's data, and so of the built-in
      models trained on it; unset uses --seed. Fix it to compare training
      seeds on one dataset.
    skip_bad_rows: hub tasks: drop the data rows that fail the checks made
      when the task loads (counted in a warning) instead of refusing the
      data.
  """

  task: str = tasks.DEFAULT_TASK
  data_files: tuple[str, ...] | None = None
  teacher: str = builtin.BUILTIN
  student: str = builtin.BUILTIN
  cache_dir: str | None = None
  task_seed: int | None = None
  skip_bad_rows: bool = False

  def __post_init__(self):
    if self.data_files is not None:
      object.__setattr__(self, "data_files", tuple(self.data_files))
    if self.task_seed is not None:
      validation.check_int("task_seed", self.task_seed)


@dataclasses.dataclass(frozen=True, kw_only=True)
class EvalConfig:
  """The evaluations before and after training.

  Attributes:
    eval_examples: validation prompts per evaluation, >= 1.
    eval_samples_per_prompt: temperature-1 samples per prompt in
      evaluations (for Self-BLEU), >= 1.
  """

  eval_examples: int = 128
  eval_samples_per_prompt: int = 4

  def __post_init__(self):
    validation.check_int("eval_examples", self.eval_examples, 1)
    validation.check_int("eval_samples_per_prompt",
                         self.eval_samples_per_prompt, 1)


@dataclasses.dataclass(frozen=True, kw_only=True)
class RewardConfig:
  """The sequence-level reward of the RL agents and of the evaluations.

  Attributes:
    reward: 'default' (the task's own), a task reward name (factuality,
      accuracy, ...), rouge1/rouge2/rougeL, exact_match, entailment, or a
      local checkpoint directory: a one-label preference model, an NLI
      classifier or a T5 judge (chosen by its config.json).
    entailment_model: local NLI checkpoint (BERT, RoBERTa, DeBERTa-v2/v3
      classifier or T5 judge) for --reward=entailment.
    length_penalty: subtract this times the completion length in tokens.
  """

  reward: str = "default"
  entailment_model: str | None = None
  length_penalty: float = 0.0

  def __post_init__(self):
    validation.check_finite("length_penalty", self.length_penalty)


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunConfig:
  """Everything one training run reads.

  Attributes:
    agent: the agent's config (its class picks the agent); an optimizer
      `decay_steps` of 0 becomes `loop.steps` (the schedule spans the run).
    inputs: the task and the models.
    loop: the training loop (steps, batch size, seed, logging, saving).
    eval: the evaluations.
    reward: the reward.
    workdir: directory of this run.
    mesh: device mesh, e.g. 'data:4,fsdp:2' or 'auto' (every device on
      data); unset runs on one device. Rows of each batch (batch_size *
      samples_per_prompt) must divide by data * fsdp.
    force_new_run: start over in a --workdir that holds a run: move that
      run's files into <workdir>/previous_run_<n>/ (nothing is deleted)
      instead of resuming it.
    compilation_cache: keep compiled XLA programs in <cache_dir>/xla (the
      gkdrl cache, as for the built-in models), so a second run of the
      same configuration starts faster; false leaves JAX's settings as
      they are (see `gkdrl.runners.compilation`).
    cpu_scratch_reuse: on JAX's CPU backend under Linux, let compiled
      programs reuse their scratch memory between calls instead of
      mapping it afresh (CPU programs then run on the calling thread); a
      no-op elsewhere (see `gkdrl.runners.cpu_memory`).
  """

  agent: agents.AgentConfig = dataclasses.field(
      default_factory=agents.GKDRLConfig)
  inputs: InputsConfig = dataclasses.field(default_factory=InputsConfig)
  loop: loop_lib.LoopConfig = dataclasses.field(
      default_factory=loop_lib.LoopConfig)
  eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
  reward: RewardConfig = dataclasses.field(default_factory=RewardConfig)
  workdir: str = "runs/train"
  mesh: str | None = None
  force_new_run: bool = False
  compilation_cache: bool = True
  cpu_scratch_reuse: bool = True

  def __post_init__(self):
    # The learning-rate schedule spans the run unless set otherwise.
    optimizer = self.agent.optimizer
    if optimizer.decay_steps == 0:
      object.__setattr__(self, "agent", dataclasses.replace(
          self.agent, optimizer=dataclasses.replace(
              optimizer, decay_steps=self.loop.steps)))
    rows = self.loop.batch_size * getattr(self.agent, "samples_per_prompt",
                                          1)
    if rows % self.agent.grad_accum_steps:
      validation.fail("grad_accum_steps", self.agent.grad_accum_steps,
                      f"it must divide the {rows} rows of each batch "
                      "(batch_size * samples_per_prompt)")

  @property
  def agent_name(self) -> str:
    return agents.agent_name(self.agent)

  @property
  def task_seed(self) -> int:
    """The seed of the task's data: `inputs.task_seed`, else `loop.seed`."""
    seed = self.inputs.task_seed
    return self.loop.seed if seed is None else seed


# The parts of RunConfig whose fields are run settings, in flag order.
RUN_PARTS = ("inputs", "eval", "reward", "loop")


# The settings of LoRA adapters other than their rank.
LORA_SETTINGS = ("lora_alpha", "lora_targets", "lora_base_dtype")


def agent_settings() -> dict[str, dict[str, tuple[str, ...]]]:
  """{setting: {agent: path}} over the registered agent configs."""
  settings = {}
  for name, cls in sorted(agents.AGENT_CONFIGS.items()):
    for field, path, *_ in fields.flat_fields(cls):
      settings.setdefault(field, {})[name] = path
  return settings


def run_settings() -> dict[str, tuple[type, tuple[str, ...]]]:
  """{setting: (part class, path)} of the settings outside the agent."""
  settings = {}
  types = fields.field_types(RunConfig)
  for part in RUN_PARTS:
    for field, path, *_ in fields.flat_fields(types[part], (part,)):
      settings[field] = types[part], path
  for field, path, *_ in fields.flat_fields(RunConfig):
    if len(path) == 1 and path[0] != "agent":
      settings[field] = RunConfig, path
  return settings


def setting_names() -> list[str]:
  """Every flat setting name (`values` key, flag) of a run, sorted."""
  return sorted({"agent", *agent_settings(), *run_settings()})


# ---------------------------------------------------------------------------
# Flat values <-> RunConfig.


def agent_config(name: str, values: dict[str, Any], *, steps: int,
                 default_max_new_tokens: int | None = None
                 ) -> agents.AgentConfig:
  """The config of agent `name` from flat settings (None: its default).

  Args:
    name: a name of `agents.AGENT_CONFIGS`.
    values: flat settings; keys that are no agent setting are ignored.
    steps: the run's steps, the length of the learning-rate schedule.
    default_max_new_tokens: T when `max_new_tokens` is unset (the runners
      pass the task's longest target); None keeps the config's default.

  Raises:
    ValueError: a setting that agent `name` does not read.
  """
  validation.check_choice("agent", name, sorted(agents.AGENT_CONFIGS))
  given = {k: values[k] for k in agent_settings()
           if values.get(k) is not None}
  paths = {field: path for field, path, *_ in
           fields.flat_fields(agents.AGENT_CONFIGS[name])}
  for setting, value in given.items():
    if setting not in paths:
      validation.fail(f"--{setting}", value,
                      f"--agent={name} does not read it (agents that do: "
                      f"{', '.join(agent_settings()[setting])})")
  settings = {paths[k]: v for k, v in given.items()}
  if default_max_new_tokens is not None and "max_new_tokens" not in given:
    settings[paths["max_new_tokens"]] = default_max_new_tokens
  settings[("optimizer", "decay_steps")] = steps
  config = fields.build(agents.AGENT_CONFIGS[name], settings)
  unread = config.unread_settings()
  for setting, value in given.items():
    if setting in unread:
      validation.fail(f"--{setting}", value,
                      f"--agent={name} does not read it: {unread[setting]}")
  if not config.lora_rank:  # adapter settings apart from their defaults
    default = agents.AGENT_CONFIGS[name]()
    for setting in LORA_SETTINGS:
      if getattr(config, setting) != getattr(default, setting):
        validation.fail(f"--{setting}", given[setting],
                        "it sets up LoRA adapters, which train only with "
                        "--lora_rank > 0")
  return config


def from_values(values: dict[str, Any], *,
                default_max_new_tokens: int | None = None) -> RunConfig:
  """A `RunConfig` from flat settings, as `flag_values` gives them.

  Missing keys take their defaults; None agent settings the agent's own.

  Raises:
    ValueError: an unknown key, a bad value, or a setting the agent does
      not read.
  """
  unknown = sorted(set(values) - set(setting_names()))
  if unknown:
    raise ValueError(f"Unknown settings {unknown}; known: "
                     f"{setting_names()}.")
  by_path = {path: values[name]
             for name, (_, path) in run_settings().items() if name in values}
  # None is "unset" for settings whose field does not take None.
  defaults = _run_defaults()
  by_path = {p: v for p, v in by_path.items()
             if v is not None or defaults[p] is None}
  config = fields.build(RunConfig, by_path)
  agent = agent_config(
      values.get("agent") or agents.agent_name(config.agent), values,
      steps=config.loop.steps,
      default_max_new_tokens=default_max_new_tokens)
  return dataclasses.replace(config, agent=agent)


@functools.cache
def _run_defaults() -> dict[tuple[str, ...], Any]:
  types = fields.field_types(RunConfig)
  defaults = {}
  for part in RUN_PARTS:
    for _, path, _, _, default in fields.flat_fields(types[part], (part,)):
      defaults[path] = default
  for _, path, _, _, default in fields.flat_fields(RunConfig):
    if len(path) == 1:
      defaults[path] = default
  return defaults


def default_values(**overrides) -> dict[str, Any]:
  """The flat settings of the default run (agent settings None)."""
  values = {name: None for name in agent_settings()}
  values["agent"] = agents.agent_name(RunConfig().agent)
  values.update({name: _run_defaults()[path]
                 for name, (_, path) in run_settings().items()})
  unknown = sorted(set(overrides) - set(values))
  if unknown:
    raise ValueError(f"Unknown settings {unknown}; known: "
                     f"{sorted(values)}.")
  values.update(overrides)
  return values


def to_values(config: RunConfig) -> dict[str, Any]:
  """The flat settings of `config`: those its agent reads filled in."""
  values = {name: None for name in agent_settings()}
  values["agent"] = config.agent_name
  for name, (_, path) in run_settings().items():
    values[name] = functools.reduce(getattr, path, config)
  unread = config.agent.unread_settings()
  for field, path, *_ in fields.flat_fields(type(config.agent)):
    if field not in unread:
      values[field] = functools.reduce(getattr, path, config.agent)
  if values.get("data_files") is not None:
    values["data_files"] = list(values["data_files"])
  return values
