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
  # Derived, not set: the runners pass the run's steps.
  decay_steps: int = dataclasses.field(default=0, metadata={"setting": False})
  final_lr_fraction: float = 0.1
  weight_decay: float = 0.01
  b1: float = 0.9
  b2: float = 0.98
  max_grad_norm: float = 1.0

  def __post_init__(self):
    validation.check_positive("learning_rate", self.learning_rate)
    validation.check_int("warmup_steps", self.warmup_steps, 0)
    validation.check_int("decay_steps", self.decay_steps, 0)
    validation.check_unit_interval("final_lr_fraction", self.final_lr_fraction)
    validation.check_non_negative("weight_decay", self.weight_decay)
    validation.check_non_negative("max_grad_norm", self.max_grad_norm)
    validation.check_range("b1", self.b1, 0.0, 1.0)
    validation.check_range("b2", self.b2, 0.0, 1.0)


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
