"""SeqKD (Kim & Rush, 2016): SFT on completions the teacher samples.

Each batch's prompts are completed by the teacher (at `sample_temperature`,
0 for greedy teacher outputs) and the student maximises their likelihood
with `sft`'s loss.
"""

import dataclasses

from gkdrl.agents import acting
from gkdrl.agents import base
from gkdrl.agents import cached_teacher
from gkdrl.agents import registry
from gkdrl.agents import rollout_config
from gkdrl.agents import sft
from gkdrl.tasks import teacher_cache


@dataclasses.dataclass(frozen=True, kw_only=True)
class SeqKDConfig(base.AgentConfig):
  """SeqKD: SFT on completions the teacher samples for each batch
  (at `sample_temperature`, 0 for greedy teacher outputs).

  Attributes:
    teacher_cache: directory of an offline teacher cache built by
      `gkdrl.runners.cache_teacher` (--mode=top_k for supervised_kd: the
      divergence over the teacher's k cached tokens plus one tail bucket;
      --mode=samples for seqkd: one cached teacher completion per
      example): train from it with no teacher in memory. Unset uses the
      live teacher.
  """

  teacher_cache: str | None = None

  def unread_settings(self) -> dict[str, str]:
    unread = super().unread_settings()
    if self.teacher_cache:
      unread.update(rollout_config.unread_sampling(
          "seqkd with a teacher cache trains on the cached samples"))
    return unread


def make_act(config: SeqKDConfig, parts: registry.Parts):
  """`act`: the teacher samples the completions."""

  def act(state, task_batch, key, *, teacher_params=None,
          reward_params=None):
    del state, reward_params
    batch = acting.sample_batch(
        parts.teacher, teacher_params, key, task_batch, config=config,
        eos_token_id=parts.eos_token_id, pad_token_id=parts.pad_token_id)
    return batch, acting.rollout_info(batch)

  return act


def build(config: SeqKDConfig, parts: registry.Parts) -> base.Agent:
  if config.teacher_cache:
    cache = teacher_cache.open_cache(config.teacher_cache, expected=dict(
        mode="samples", **teacher_cache.tokenizer_identity(parts.tokenizer)))
    return registry.assemble(
        config, sft.make_nll_loss(config, parts.student),
        cached_teacher.make_cached_seqkd_act(cache, parts.pad_token_id),
        uses_teacher=False, uses_reward=False)
  return registry.assemble(config, sft.make_nll_loss(config, parts.student),
                           make_act(config, parts), uses_teacher=True,
                           uses_reward=False)


registry.register("seqkd", SeqKDConfig, build)
