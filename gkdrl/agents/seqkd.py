"""SeqKD (Kim & Rush, 2016): SFT on completions the teacher samples.

Each batch's prompts are completed by the teacher (at `sample_temperature`,
0 for greedy teacher outputs) and the student maximises their likelihood
with `sft`'s loss.
"""

import dataclasses

from gkdrl.agents import acting
from gkdrl.agents import base
from gkdrl.agents import registry
from gkdrl.agents import sft


@dataclasses.dataclass(frozen=True, kw_only=True)
class SeqKDConfig(base.AgentConfig):
  """SeqKD: SFT on completions the teacher samples for each batch
  (at `sample_temperature`, 0 for greedy teacher outputs)."""


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
  return registry.assemble(config, sft.make_nll_loss(config, parts.student),
                           make_act(config, parts), uses_teacher=True,
                           uses_reward=False)


registry.register("seqkd", SeqKDConfig, build)
