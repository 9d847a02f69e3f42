"""How an agent samples its completions: one config, nested in every agent's.

`RolloutConfig` sits inside `AgentConfig` as `config.rollout`, the way the
optimiser's settings sit in `config.optimizer`. The agent configs also take
its fields as keywords (`GKDConfig(max_new_tokens=8)` is
`GKDConfig(rollout=RolloutConfig(max_new_tokens=8))`) and read them as
attributes (`config.max_new_tokens`), so the flat spelling keeps working.
"""

import dataclasses

from gkdrl import validation


@dataclasses.dataclass(frozen=True, kw_only=True)
class RolloutConfig:
  """Settings of the completions an agent samples (student or teacher).

  Attributes:
    max_new_tokens: T, the most tokens sampled per completion, >= 1.
    sample_temperature: temperature of rollouts (paper: 1.0 in training),
      in [1e-3, 1e3]; 0 is greedy.
    top_k: keep the k most likely tokens when sampling, >= 0; 0 disables.
    top_p: nucleus mass when sampling, in (0, 1]; 1 disables.
  """

  max_new_tokens: int = 32
  sample_temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0

  def __post_init__(self):
    validation.check_int("max_new_tokens", self.max_new_tokens, 1)
    validation.check_temperature("sample_temperature",
                                 self.sample_temperature, greedy=True)
    validation.check_int("top_k", self.top_k, 0)
    if not 0.0 < self.top_p <= 1.0:
      validation.fail("top_p", self.top_p, "allowed values lie in (0, 1]")


ROLLOUT_FIELDS = tuple(f.name for f in dataclasses.fields(RolloutConfig))


def unread_sampling(why: str) -> dict[str, str]:
  """`AgentConfig.unread_settings` of an agent that samples nothing.

  `max_new_tokens` stays read: the runners' evaluations sample with it.
  """
  return {"sample_temperature": why, "top_k": why, "top_p": why}


class TakesRolloutKeywords(type):
  """Metaclass: `Config(max_new_tokens=8, ...)` builds the nested rollout.

  Flat keywords override the fields of a `rollout=` given alongside them,
  so `dataclasses.replace(config, top_p=0.9)` works too.
  """

  def __call__(cls, *args, **kwargs):
    flat = {k: kwargs.pop(k) for k in ROLLOUT_FIELDS if k in kwargs}
    if flat:
      rollout = kwargs.get("rollout")
      kwargs["rollout"] = (RolloutConfig(**flat) if rollout is None
                           else dataclasses.replace(rollout, **flat))
    return super().__call__(*args, **kwargs)
