"""Policy-gradient terms on a sequence-level reward.

The RL half of the GKD+RL objective (paper Eq. 5) is REINFORCE on the reward
of a finished sequence:

    grad E_{y ~ pi}[r(y)] = E[(r(y) - b) * grad log pi(y)],
    log pi(y) = sum_t log pi(y_t | y_<t, x),

with a baseline b that does not depend on y (stop-gradient). The loss to
minimise is -(r - b) * log pi(y), reduced over tokens and rows with a named
reduction (see `gkdrl.losses.reductions`): "sum" is exactly the estimator
above; "sequence" (the default) normalises each sequence's log-probability by
its length, matching the length-averaged divergence of paper Eq. 2.

See R. J. Williams, "Simple statistical gradient-following algorithms for
connectionist reinforcement learning", 1992, and for leave-one-out baselines
Kool et al., "Buy 4 REINFORCE samples, get a baseline for free!", 2019.

Unlike `rlax.policy_gradient_loss`, which divides by T even when a mask is
passed, every reduction here divides by valid-token counts only.
"""

import chex
import jax
import jax.numpy as jnp

from gkdrl import validation
from gkdrl.losses import reductions

Array = jax.Array

BASELINES = ("none", "mean", "rloo")


def _check_group_size(batch_size: int, group_size: int) -> None:
  if not isinstance(group_size, int) or group_size < 1:
    raise ValueError(f"group_size={group_size!r} must be an integer >= 1.")
  if batch_size % group_size:
    raise ValueError(
        f"group_size={group_size} must divide the batch size {batch_size}: "
        "samples of one prompt are consecutive rows.")


def sequence_advantages(rewards: Array, *, baseline: str = "mean",
                        group_size: int = 1) -> Array:
  """Advantages r - b of sequence-level rewards, with a stop-gradient b.

  Baselines:
    "none": b = 0.
    "mean": b = mean reward of the batch (group_size = 1) or of each group of
      `group_size` consecutive rows (the samples of one prompt).
    "rloo": leave-one-out, b_i = (sum_{j in group(i)} r_j - r_i) / (k - 1)
      with k = group_size >= 2; unbiased because b_i excludes row i.

  Args:
    rewards: `[B]` sequence rewards.
    baseline: "none", "mean" or "rloo".
    group_size: number of consecutive rows sampled from one prompt.

  Returns:
    `[B]` float32 advantages (no gradient flows to the rewards).
  """
  chex.assert_rank(rewards, 1)
  validation.check_choice("baseline", baseline, BASELINES)
  batch_size = rewards.shape[0]
  _check_group_size(batch_size, group_size)
  rewards = jax.lax.stop_gradient(rewards.astype(jnp.float32))
  if baseline == "none":
    return rewards
  if baseline == "mean":
    # One prompt per row: the whole batch is one group.
    k = group_size if group_size > 1 else batch_size
    groups = rewards.reshape(batch_size // k, k)  # [G, k]
    b = jnp.mean(groups, axis=1, keepdims=True)
    return (groups - b).reshape(batch_size)
  groups = rewards.reshape(batch_size // group_size, group_size)  # [G, k]
  if group_size < 2:
    raise ValueError(
        f"baseline='rloo' needs group_size >= 2 samples per prompt, got "
        f"group_size={group_size}.")
  b = (jnp.sum(groups, axis=1, keepdims=True) - groups) / (group_size - 1)
  return (groups - b).reshape(batch_size)


def policy_gradient_loss(logp_a: Array, rewards: Array, mask: Array, *,
                         baseline: str = "mean", group_size: int = 1,
                         reduction: str = "sequence"
                         ) -> tuple[Array, dict[str, Array]]:
  """REINFORCE loss on a sequence-level reward.

      loss = -reduce_{b, t}( A_b * log pi(a_{b,t}) ),  A = sg(r - b)

  Args:
    logp_a: `[B, T]` log-probabilities of the taken tokens under the
      differentiated policy.
    rewards: `[B]` sequence rewards.
    mask: `[B, T]` 0/1 or bool, 1 for generated tokens (EOS included).
    baseline: "none", "mean" or "rloo" (see `sequence_advantages`).
    group_size: consecutive rows sampled from one prompt.
    reduction: "sequence", "token" or "sum".

  Returns:
    (loss, metrics): a float32 scalar and a dict with "loss/pg",
    "reward/mean", "reward/std" and "advantage/mean".
  """
  chex.assert_rank([logp_a, rewards, mask], [2, 1, 2])
  chex.assert_equal_shape([logp_a, mask])
  chex.assert_equal_shape_prefix([logp_a, rewards], 1)
  advantages = sequence_advantages(rewards, baseline=baseline,
                                   group_size=group_size)  # [B]
  per_token = -advantages[:, None] * logp_a.astype(jnp.float32)  # [B, T]
  loss = reductions.masked_reduce(per_token, mask, reduction=reduction)
  rewards = rewards.astype(jnp.float32)
  metrics = {
      "loss/pg": loss,
      "reward/mean": jnp.mean(rewards),
      "reward/std": jnp.std(rewards),
      "advantage/mean": jnp.mean(advantages),
  }
  return loss, metrics


def ppo_clip_loss(logp_a: Array, old_logp_a: Array, advantages: Array,
                  mask: Array, *, epsilon: float = 0.2,
                  reduction: str = "sequence"
                  ) -> tuple[Array, dict[str, Array]]:
  """PPO's clipped surrogate, for several updates per rollout.

      rho = exp(log pi(a) - log pi_old(a))
      loss = -reduce( min(rho * A, clip(rho, 1 - eps, 1 + eps) * A) )

  The same maths as `rlax.clipped_surrogate_pg_loss`, written out here so
  that the reduction respects the mask. See Schulman et al., "Proximal Policy
  Optimization Algorithms", 2017 (https://arxiv.org/abs/1707.06347).

  Args:
    logp_a: `[B, T]` log-probabilities of the taken tokens now.
    old_logp_a: `[B, T]` log-probabilities when the tokens were sampled.
    advantages: `[B]` sequence advantages or `[B, T]` per-token advantages.
    mask: `[B, T]` 0/1 or bool.
    epsilon: clipping radius, > 0.
    reduction: "sequence", "token" or "sum".

  Returns:
    (loss, metrics) with "loss/ppo", "ppo/clip_fraction" and
    "ppo/approx_kl" (the k3 estimate of KL(old || new)).
  """
  chex.assert_rank([logp_a, old_logp_a, mask], 2)
  chex.assert_equal_shape([logp_a, old_logp_a, mask])
  chex.assert_rank(advantages, {1, 2})
  validation.check_positive("epsilon", epsilon)
  if advantages.ndim == 1:
    chex.assert_equal_shape_prefix([logp_a, advantages], 1)
    advantages = advantages[:, None]  # [B, 1]
  advantages = jax.lax.stop_gradient(advantages.astype(jnp.float32))
  old_logp_a = jax.lax.stop_gradient(old_logp_a.astype(jnp.float32))
  valid = mask.astype(bool)
  # Masked positions may hold arbitrary log-probabilities: zero the log ratio
  # there before exponentiating (double-where) so no inf reaches a gradient.
  log_ratio = jnp.where(valid, logp_a.astype(jnp.float32) - old_logp_a, 0.0)
  ratio = jnp.exp(log_ratio)  # [B, T]
  clipped = jnp.clip(ratio, 1.0 - epsilon, 1.0 + epsilon)
  surrogate = jnp.minimum(ratio * advantages, clipped * advantages)
  loss = reductions.masked_reduce(-surrogate, mask, reduction=reduction)
  is_clipped = (jnp.abs(ratio - 1.0) > epsilon).astype(jnp.float32)
  metrics = {
      "loss/ppo": loss,
      "ppo/clip_fraction": reductions.masked_reduce(
          is_clipped, mask, reduction="token"),
      "ppo/approx_kl": reductions.masked_reduce(
          jax.lax.stop_gradient(ratio - 1.0 - log_ratio), mask,
          reduction="token"),
  }
  return loss, metrics
