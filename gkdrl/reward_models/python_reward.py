"""Reward models from Python callables, task oracles and a length penalty."""

from collections.abc import Callable, Sequence
import math
from typing import Any

import jax.numpy as jnp
import numpy as np

from gkdrl.reward_models import base

# fn(sources, completions, targets) -> rewards [B]; the signature of the
# built-in tasks' oracle reward functions.
TextRewardFn = Callable[
    [Sequence[str] | None, Sequence[str], Sequence[str] | None], Any
]
LENGTH_UNITS = ("tokens", "words", "chars")


def make_python_reward(
    fn: TextRewardFn,
    *,
    name: str | None = None,
    requires_sources: bool = False,
    requires_targets: bool = False,
) -> base.RewardModel:
  """Wraps a Python callable on decoded text as a host reward model.

  Args:
    fn: `fn(sources, completions, targets) -> rewards [B]`, any array-like of
      B finite numbers. `sources` / `targets` are lists of B strings, or None
      when the inputs do not carry them.
    name: metric name; defaults to `fn.__name__`.
    requires_sources: raise a ValueError when `inputs.sources` is None
      instead of calling `fn` with None.
    requires_targets: the same for `inputs.targets`.

  Returns:
    A `RewardModel` with `on_host=True` and no parameters (`init` returns
    `()`); `score` returns `np.ndarray [B] float32` and raises ValueError when
    `fn` returns the wrong shape or a non-finite value.
  """
  if not callable(fn):
    raise ValueError(f"fn must be callable; got {type(fn).__name__}.")
  if name is None:
    name = getattr(fn, "__name__", type(fn).__name__)
  if not isinstance(name, str) or not name:
    raise ValueError(f"name must be a non-empty string; got {name!r}.")
  required = ["completions"]
  if requires_sources:
    required.append("sources")
  if requires_targets:
    required.append("targets")

  def init(key):
    del key
    return ()

  def score(params, inputs):
    del params
    batch_size = base.check_inputs(inputs, required=required, model=name)
    as_list = lambda x: None if x is None else list(x)
    rewards = fn(
        as_list(inputs.sources),
        list(inputs.completions),
        as_list(inputs.targets),
    )
    return base.check_rewards(rewards, batch_size, name)

  return base.RewardModel(name=name, on_host=True, init=init, score=score)


def task_reward(task: Any, name: str | None = None) -> base.RewardModel:
  """Turns a task's oracle reward function into a host reward model.

  An oracle is `fn(sources, completions, targets) -> np.ndarray [B]`, the
  signature of the built-in tasks' `Task.reward_fns` in `gkdrl.tasks`
  (not imported here); sources and targets are required.

  Args:
    task: a `Task` (anything with a `reward_fns` mapping of name -> oracle),
      or an oracle callable itself.
    name: for a task, which of its `reward_fns` (optional when it has exactly
      one); for a callable, the metric name (defaults to its `__name__`).

  Returns:
    A host `RewardModel` named after the chosen reward.

  Raises:
    ValueError: `name` is not one of the task's rewards (the error lists
      them), or `task` is neither a task nor a callable.
  """
  reward_fns = getattr(task, "reward_fns", None)
  if reward_fns is not None:
    task_name = getattr(task, "name", type(task).__name__)
    available = sorted(reward_fns)
    if name is None and len(available) == 1:
      name = available[0]
    if name not in reward_fns:
      raise ValueError(
          f"Task {task_name!r} has no reward name={name!r}; its reward_fns "
          f"are {available}."
      )
    fn = reward_fns[name]
  elif callable(task):
    fn = task
  else:
    raise ValueError(
        "task must be a Task with reward_fns or a callable fn(sources, "
        f"completions, targets); got {type(task).__name__}."
    )
  return make_python_reward(
      fn, name=name, requires_sources=True, requires_targets=True
  )


def make_length_penalty(
    *,
    scale: float = 0.01,
    unit: str = "tokens",
    free_length: int = 0,
    name: str = "length_penalty",
) -> base.RewardModel:
  """A non-positive reward `-scale * max(length - free_length, 0)`.

  It is already signed as a penalty, so it takes a positive weight in
  `weighted_sum`.

  Args:
    scale: penalty per unit of length beyond `free_length`, >= 0.
    unit: "tokens" counts `inputs.completion_mask` (a device model, usable in
      `jax.jit`); "words" (whitespace-separated) and "chars" count the
      decoded `inputs.completions` (host models).
    free_length: lengths up to this are not penalised, >= 0.
    name: metric name.

  Returns:
    A `RewardModel` returning float32 `[B]` values <= 0.
  """
  if not isinstance(scale, (int, float)) or not math.isfinite(scale) or (
      scale < 0):
    raise ValueError(f"scale={scale!r} must be a finite number >= 0.")
  if unit not in LENGTH_UNITS:
    raise ValueError(f"unit={unit!r} must be one of {LENGTH_UNITS}.")
  if not isinstance(free_length, int) or free_length < 0:
    raise ValueError(f"free_length={free_length!r} must be an int >= 0.")

  def init(key):
    del key
    return ()

  if unit == "tokens":

    def score(params, inputs):
      del params
      base.check_inputs(inputs, required=["completion_mask"], model=name)
      lengths = jnp.sum(inputs.completion_mask, axis=-1)  # [B]
      excess = jnp.maximum(lengths - free_length, 0).astype(jnp.float32)
      return -scale * excess  # [B]

    return base.RewardModel(name=name, on_host=False, init=init, score=score)

  count = (lambda s: len(s.split())) if unit == "words" else len

  def host_score(params, inputs):
    del params
    batch_size = base.check_inputs(inputs, required=["completions"],
                                   model=name)
    lengths = np.array([count(c) for c in inputs.completions], np.float64)
    rewards = -scale * np.maximum(lengths - free_length, 0.0)
    return base.check_rewards(rewards, batch_size, name)

  return base.RewardModel(name=name, on_host=True, init=init,
                          score=host_score)
