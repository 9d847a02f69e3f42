"""gkd_rl's teacher weight alpha as a schedule carried in the state.

    constant   alpha_t = alpha (a Python number: the loss skips the teacher
               at 0 and the rewards at 1)
    linear     alpha_t = alpha + (alpha_end - alpha) * min(t / alpha_steps, 1)
    adaptive   alpha_{t+1} = clip(alpha_t * (1 + gain * e_t), 0, 1) with
               e_t = clip((kl_t - target) / target, -0.2, 0.2)

t is the number of updates applied (`TrainingState.step`); kl_t the step's
"kl/teacher" metric (reverse KL to the teacher). The adaptive rule is a
proportional controller on the relative error, as PPO's adaptive KL
coefficient (Ziegler et al. 2019, https://arxiv.org/abs/1909.08593, Eq. 3):
a drift above the target raises the teacher's weight, below it lowers it,
by at most a factor 1 +- 0.2 gain per step. Being multiplicative, it holds
at alpha = 0, so the schedule starts from a small floor (1e-3) instead.

A scheduled alpha is a traced scalar in `TrainingState.alpha`, so it is
checkpointed and restored with the rest of the state, and both the teacher
and the rewards are computed every step.
"""

import jax.numpy as jnp

from gkdrl import types

SCHEDULES = ("constant", "linear", "adaptive")
# The multiplicative controller cannot leave 0; it never goes below this.
ADAPTIVE_FLOOR = 1e-3
# The relative error is clipped to +-MAX_ERROR per step (as PPO's).
MAX_ERROR = 0.2


def linear_alpha(start: float, end: float, steps: int, step) -> types.Array:
  """alpha after `step` updates of a linear schedule, `[]` float32."""
  fraction = jnp.minimum(jnp.asarray(step, jnp.float32) / steps, 1.0)
  return jnp.float32(start) + (jnp.float32(end) - start) * fraction


def adaptive_alpha(alpha, kl, *, target: float, gain: float) -> types.Array:
  """One proportional-controller step of alpha towards a teacher KL target.

  Args:
    alpha: `[]` the current alpha.
    kl: `[]` the measured teacher divergence of the step.
    target: the divergence to hold, > 0.
    gain: the controller's gain, > 0.

  Returns:
    `[]` float32 next alpha in [ADAPTIVE_FLOOR, 1].
  """
  error = jnp.clip((kl - target) / target, -MAX_ERROR, MAX_ERROR)
  error = jnp.where(jnp.isfinite(error), error, 0.0)
  return jnp.clip(alpha * (1.0 + gain * error), ADAPTIVE_FLOOR,
                  1.0).astype(jnp.float32)


def initial_alpha(config) -> types.Array:
  """The state's alpha before any update."""
  if config.alpha_schedule == "adaptive":
    return jnp.float32(max(config.alpha, ADAPTIVE_FLOOR))
  return jnp.float32(config.alpha)


def next_alpha(config, state, metrics) -> types.Array:
  """alpha for the state after an update (`state.step` already counts it)."""
  if config.alpha_schedule == "linear":
    return linear_alpha(config.alpha, config.alpha_end, config.alpha_steps,
                        state.step)
  return adaptive_alpha(state.alpha, metrics["kl/teacher"],
                        target=config.target_teacher_kl,
                        gain=config.alpha_gain)
