"""absl flags of the runners, made from the fields of `config.RunConfig`.

A flag has its field's name, type and default, and its help is the field's
documentation (`gkdrl.runners.config`). Agent flags default to None, meaning
"the chosen agent's default" (their help lists each agent's); a flag that
the chosen agent does not read is an error, so a typo in a sweep never
silently trains something else.
"""

import types as pytypes
import typing
from typing import Any

from absl import flags

from gkdrl import agents
from gkdrl.runners import config as config_lib
from gkdrl.runners import fields
from gkdrl.runners import loop

# Settings whose flag default is not the field's.
_FLAG_DEFAULTS = {"max_new_tokens": "the task's longest target"}


def _define(name: str, kind, default, help_text: str) -> None:
  """Defines flag `name` of the (Optional-stripped) annotation `kind`."""
  if isinstance(kind, pytypes.UnionType) or typing.get_origin(kind) in (
      typing.Union,):
    kind = next(k for k in typing.get_args(kind) if k is not type(None))
  define = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer,
            float: flags.DEFINE_float, str: flags.DEFINE_string}.get(kind)
  if typing.get_origin(kind) in (tuple, list):
    define = flags.DEFINE_list
    default = None if default is None else list(default)
  if define is None:
    raise TypeError(f"setting {name!r} of type {kind} has no flag type.")
  define(name, default, help_text[:1].upper() + help_text[1:])


def _define_fields(cls, *, only=None, exclude=()) -> None:
  for name, _, kind, doc, default in fields.flat_fields(cls):
    if (only is None or name in only) and name not in exclude:
      _define(name, kind, default, doc)


def define_model_flags():
  """The task, the models, the seed and the evaluations."""
  _define_fields(config_lib.InputsConfig)
  _define_fields(loop.LoopConfig, only=("seed",))
  _define_fields(config_lib.EvalConfig)


def _agent_help(name: str, by_agent: dict[str, tuple[str, ...]]) -> str:
  """The doc of agent setting `name`, its agents and their defaults."""
  docs, defaults = [], {}
  for agent, path in by_agent.items():
    cls = agents.AGENT_CONFIGS[agent]
    value = cls()
    for part in path:
      value = getattr(value, part)
    defaults.setdefault(repr(value), []).append(agent)
    owner = cls
    for part in path[:-1]:
      owner = fields.field_types(owner)[part]
    docs.append(fields.field_docs(owner).get(name, ""))
  doc = docs[0].rstrip(".")
  if len(by_agent) < len(agents.AGENT_CONFIGS):
    doc += f". Agents: {', '.join(by_agent)}"
  if name in _FLAG_DEFAULTS:
    default = _FLAG_DEFAULTS[name]
  elif len(defaults) == 1:
    default = next(iter(defaults))
  else:
    default = "; ".join(f"{v} ({', '.join(a)})" for v, a in defaults.items())
  return f"{doc}. Default: {default}."


def define_agent_flags():
  """The agent, its settings, the reward, the loop and the mesh."""
  default_agent = agents.agent_name(config_lib.RunConfig().agent)
  flags.DEFINE_enum("agent", default_agent, sorted(agents.AGENT_CONFIGS),
                    "Which agent to train.")
  for name, by_agent in sorted(config_lib.agent_settings().items()):
    first = next(iter(by_agent))
    kind = next(k for n, _, k, _, _ in fields.flat_fields(
        agents.AGENT_CONFIGS[first]) if n == name)
    _define(name, kind, None, _agent_help(name, by_agent))
  _define_fields(config_lib.RewardConfig)
  _define_fields(loop.LoopConfig, exclude=("seed",))
  _define_fields(config_lib.RunConfig,
                 only=("mesh", "force_new_run", "compilation_cache",
                       "cpu_scratch_reuse"))


def define_workdir_flag():
  _define_fields(config_lib.RunConfig, only=("workdir",))


def flag_values() -> dict[str, Any]:
  """The parsed flags of the run settings as a flat dict."""
  return {name: flags.FLAGS[name].value
          for name in config_lib.setting_names()}


def default_values(**overrides) -> dict[str, Any]:
  """The flags' defaults as a flat dict, updated by `overrides`."""
  return config_lib.default_values(**overrides)


def agent_config(name: str, values: dict, *, steps: int,
                 default_max_new_tokens: int | None = None,
                 learning_rate: float | None = None,
                 warmup_steps: int | None = None) -> agents.AgentConfig:
  """Builds the agent config from flag values (None = config default).

  `learning_rate` and `warmup_steps`, where given, override `values`'.
  """
  values = dict(values)
  for key, value in (("learning_rate", learning_rate),
                     ("warmup_steps", warmup_steps)):
    if value is not None:
      values[key] = value
  return config_lib.agent_config(
      name, values, steps=steps,
      default_max_new_tokens=default_max_new_tokens)


def quiet_logs() -> None:
  """Shows warnings and errors only, unless --verbosity was given.

  Orbax logs every checkpoint step at INFO, which would bury the progress
  bar and the results.
  """
  from absl import logging  # pylint: disable=g-import-not-at-top
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
