"""The optax optimiser every agent uses: AdamW with warmup, decay, clipping."""

import dataclasses

import optax

from gkdrl import validation


@dataclasses.dataclass(frozen=True, kw_only=True)
class OptimizerConfig:
  """AdamW with linear warmup, cosine decay and global-norm clipping.

  Attributes:
    learning_rate: peak learning rate, > 0.
    warmup_steps: linear warmup from 0 to the peak, >= 0.
    decay_steps: total steps of the schedule (warmup included); the rate
      decays by cosine to `learning_rate * final_lr_fraction`. 0 keeps the
      peak rate constant after warmup.
    final_lr_fraction: end of the cosine decay relative to the peak, [0, 1].
    weight_decay: decoupled weight decay, >= 0.
    b1: Adam's first-moment decay, [0, 1).
    b2: Adam's second-moment decay, [0, 1).
    max_grad_norm: clip gradients to this global norm; 0 disables.
  """

  learning_rate: float = 1e-3
  warmup_steps: int = 10
  decay_steps: int = 0
  final_lr_fraction: float = 0.1
  weight_decay: float = 0.01
  b1: float = 0.9
  b2: float = 0.98
  max_grad_norm: float = 1.0

  def __post_init__(self):
    validation.check_positive("learning_rate", self.learning_rate)
    if self.warmup_steps < 0:
      raise ValueError(f"warmup_steps={self.warmup_steps!r} must be >= 0.")
    if self.decay_steps < 0:
      raise ValueError(f"decay_steps={self.decay_steps!r} must be >= 0.")
    validation.check_unit_interval("final_lr_fraction", self.final_lr_fraction)
    validation.check_non_negative("weight_decay", self.weight_decay)
    validation.check_non_negative("max_grad_norm", self.max_grad_norm)
    for name in ("b1", "b2"):
      value = getattr(self, name)
      if not 0.0 <= value < 1.0:
        raise ValueError(f"{name}={value!r} is outside the range [0, 1).")


def make_schedule(config: OptimizerConfig) -> optax.Schedule:
  """The learning-rate schedule of `config`."""
  if config.decay_steps > config.warmup_steps:
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=config.learning_rate,
        warmup_steps=config.warmup_steps, decay_steps=config.decay_steps,
        end_value=config.learning_rate * config.final_lr_fraction)
  if config.warmup_steps == 0:
    return optax.constant_schedule(config.learning_rate)
  return optax.join_schedules(
      [optax.linear_schedule(0.0, config.learning_rate,
                             config.warmup_steps),
       optax.constant_schedule(config.learning_rate)],
      [config.warmup_steps])


def make_optimizer(config: OptimizerConfig) -> optax.GradientTransformation:
  """AdamW with the schedule of `config`, after global-norm clipping."""
  parts = []
  if config.max_grad_norm > 0:
    parts.append(optax.clip_by_global_norm(config.max_grad_norm))
  parts.append(optax.adamw(make_schedule(config), b1=config.b1, b2=config.b2,
                           weight_decay=config.weight_decay))
  return optax.chain(*parts)
