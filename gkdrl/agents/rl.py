"""RL: REINFORCE (or PPO) on sequence rewards of student samples.

  act:    each prompt repeated `samples_per_prompt` times, the student
          samples a completion per row, the reward model scores them.
  update: REINFORCE with a baseline,

              loss = -reduce( sg(r - b) * log p_S(y_t) )
                     + ref_kl_coef * reduce( KL(p_S || p_ref) ),

          or, with ppo_epochs > 1, PPO's clipped surrogate on the sampler's
          log-probabilities for that many gradient steps per rollout. p_ref
          is the initial student, kept frozen in the state.
"""

import dataclasses

import jax
import jax.numpy as jnp

from gkdrl import losses
from gkdrl import types
from gkdrl import validation
from gkdrl.agents import acting
from gkdrl.agents import base
from gkdrl.agents import registry
from gkdrl.losses import policy_gradient


@dataclasses.dataclass(frozen=True, kw_only=True)
class RLConfig(base.AgentConfig):
  """REINFORCE on a sequence-level reward, optionally PPO-clipped.

  Attributes:
    baseline: "none", "mean" or "rloo".
    samples_per_prompt: completions sampled per prompt (consecutive rows);
      "rloo" needs >= 2.
    ppo_epochs: gradient steps per rollout; > 1 uses PPO's clipped
      surrogate on the sampler's log-probabilities.
    ppo_epsilon: PPO clipping radius, > 0.
    ref_kl_coef: weight of KL(student || initial student), >= 0 (the
      KL-regularised RL of ordinary RLHF).
  """

  baseline: str = "mean"
  samples_per_prompt: int = 1
  ppo_epochs: int = 1
  ppo_epsilon: float = 0.2
  ref_kl_coef: float = 0.0

  def __post_init__(self):
    super().__post_init__()
    validation.check_choice("baseline", self.baseline,
                            policy_gradient.BASELINES)
    validation.check_int("samples_per_prompt", self.samples_per_prompt, 1)
    validation.check_int("ppo_epochs", self.ppo_epochs, 1)
    validation.check_positive("ppo_epsilon", self.ppo_epsilon)
    validation.check_non_negative("ref_kl_coef", self.ref_kl_coef)
    if self.baseline == "rloo" and self.samples_per_prompt < 2:
      validation.fail("samples_per_prompt", self.samples_per_prompt,
                      "baseline='rloo' needs samples_per_prompt >= 2")


def reference_logits(config: RLConfig, student, state: base.TrainingState,
                     batch: types.Batch) -> types.Array | None:
  """The initial student's logits `[B, T, V]` (no gradient), if weighed."""
  if config.ref_kl_coef <= 0:
    return None
  ref_params = base.cast_params(state.ref_params, config.compute_dtype)
  return jax.lax.stop_gradient(
      base.completion_logits(student, ref_params, batch))  # [B, T, V]


def _ppo_loss(config: RLConfig, s_logits, ref_logits, batch):
  """PPO's clipped surrogate on sequence advantages (+ reference KL)."""
  logp_a = base.token_log_probs(s_logits, batch.completion_tokens)  # [B, T]
  advantages = batch.advantages
  if advantages is None:
    advantages = losses.sequence_advantages(
        batch.rewards, baseline=config.baseline,
        group_size=config.samples_per_prompt)  # [B]
  loss, metrics = losses.ppo_clip_loss(
      logp_a, batch.behaviour_logp_a, advantages, batch.completion_mask,
      epsilon=config.ppo_epsilon, reduction=config.reduction)
  metrics["reward/mean"] = jnp.mean(batch.rewards)
  if ref_logits is not None:
    ref_kl = losses.masked_reduce(
        losses.reverse_kl(s_logits, ref_logits), batch.completion_mask,
        reduction=config.reduction)
    loss = loss + config.ref_kl_coef * ref_kl
    metrics["kl/reference"] = jax.lax.stop_gradient(ref_kl)
  return loss, metrics


def make_loss(config: RLConfig, student) -> base.LossFn:
  """REINFORCE, or PPO when ppo_epochs > 1, (+ reference KL)."""

  def loss_fn(params, state, batch, teacher_params, key):
    del teacher_params, key
    s_logits = base.student_logits(student, params, batch,
                                   config)  # [B, T, V]
    ref_logits = reference_logits(config, student, state, batch)
    if config.ppo_epochs > 1:
      return _ppo_loss(config, s_logits, ref_logits, batch)
    return losses.gkd_rl_loss(
        s_logits, None, batch.completion_tokens, batch.completion_mask,
        batch.rewards, alpha=0.0, baseline=config.baseline,
        group_size=config.samples_per_prompt, ref_logits=ref_logits,
        ref_kl_coef=config.ref_kl_coef, reduction=config.reduction,
        advantages=batch.advantages)

  return loss_fn


def make_prepare(config: RLConfig):
  """`prepare(batch)`: the advantages of the whole batch, before any split.

  The baselines are means over the batch or over a prompt's samples, so
  they are computed once on every row (`base.make_update`'s `prepare`);
  micro-batches of gradient accumulation then read `batch.advantages`.
  A batch without rewards (gkd_rl at alpha = 1) is left as it is.
  """

  def prepare(batch: types.Batch) -> types.Batch:
    if batch.rewards is None:
      return batch
    return batch._replace(advantages=losses.sequence_advantages(
        batch.rewards, baseline=config.baseline,
        group_size=config.samples_per_prompt))  # [B]

  return prepare


def sample_rollout(config: RLConfig, parts: registry.Parts, state,
                   task_batch, key) -> tuple[types.Batch, object]:
  """The student's samples, `samples_per_prompt` consecutive rows per
  prompt; returns (batch, the repeated task batch)."""
  task_batch = acting.repeat_rows(task_batch, config.samples_per_prompt)
  batch = acting.sample_batch(
      parts.student, state.params, key, task_batch, config=config,
      eos_token_id=parts.eos_token_id, pad_token_id=parts.pad_token_id)
  return batch, task_batch


def add_rewards(parts: registry.Parts, reward_params, batch: types.Batch,
                task_batch) -> tuple[types.Batch, dict]:
  """The batch with the reward model's scores, and their mean as info."""
  rewards = acting.score_batch(parts.reward, reward_params, parts.tokenizer,
                               batch, task_batch.sources, task_batch.targets)
  # Over the global batch: every process logs the same mean.
  return batch._replace(rewards=rewards), {"reward/mean": jnp.mean(rewards)}


def make_act(config: RLConfig, parts: registry.Parts):
  """`act`: student samples, scored by the reward model."""

  def act(state, task_batch, key, *, teacher_params=None,
          reward_params=None):
    del teacher_params
    batch, task_batch = sample_rollout(config, parts, state, task_batch, key)
    batch, info = add_rewards(parts, reward_params, batch, task_batch)
    return batch, {**info, **acting.rollout_info(batch)}

  return act


def build(config: RLConfig, parts: registry.Parts) -> base.Agent:
  return registry.assemble(
      config, make_loss(config, parts.student), make_act(config, parts),
      uses_teacher=False, uses_reward=True,
      keep_reference=config.ref_kl_coef > 0, epochs=config.ppo_epochs,
      prepare=make_prepare(config))


registry.register("rl", RLConfig, build)
