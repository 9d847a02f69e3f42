"""SFT: negative log-likelihood of the dataset targets (no teacher).

    loss = -reduce_{b, t}( log p_S(y_t | y_<t, x) )

on the task's reference completions; `seqkd` reuses this loss on teacher
samples.
"""

import dataclasses

from gkdrl import losses
from gkdrl.agents import acting
from gkdrl.agents import base
from gkdrl.agents import registry
from gkdrl.agents import rollout_config


@dataclasses.dataclass(frozen=True, kw_only=True)
class SFTConfig(base.AgentConfig):
  """SFT: negative log-likelihood of the dataset targets (no teacher)."""

  def unread_settings(self) -> dict[str, str]:
    return {**super().unread_settings(), **rollout_config.unread_sampling(
        "sft trains on dataset targets and samples nothing")}


def make_nll_loss(config: base.AgentConfig, student) -> base.LossFn:
  """The reduced negative log-likelihood of the batch's completions."""

  def loss_fn(params, state, batch, teacher_params, key):
    del state, teacher_params, key
    logp_a = base.token_log_probs(
        base.student_logits(student, params, batch, config),
        batch.completion_tokens)  # [B, T]
    loss = -losses.masked_reduce(logp_a, batch.completion_mask,
                                 reduction=config.reduction)
    return loss, {"loss/nll": loss}

  return loss_fn


def act(state, task_batch, key, *, teacher_params=None, reward_params=None):
  """The task batch's reference targets as the training batch."""
  del state, key, teacher_params, reward_params
  batch = acting.dataset_batch(task_batch)
  return batch, acting.rollout_info(batch)


def build(config: SFTConfig, parts: registry.Parts) -> base.Agent:
  return registry.assemble(config, make_nll_loss(config, parts.student), act,
                           uses_teacher=False, uses_reward=False)


registry.register("sft", SFTConfig, build)
