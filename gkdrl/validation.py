"""Argument checks, one message style for the whole library.

Every check raises `ValueError("<name>=<value> is not allowed; <what is
allowed>.")`, so a bad setting reads the same whether it came from a flag,
a config dataclass or a loss function's argument.

Numbers are checked when they are concrete: Python and NumPy numbers and
concrete (not traced) JAX scalars. A traced value (an alpha vmapped over,
say) cannot be read at trace time and is the caller's responsibility.
"""

from collections.abc import Collection
import math
import numbers
from typing import Any

import jax
import numpy as np


def fail(name: str, value: Any, allowed: str) -> None:
  """Raises the library's ValueError for `name=value`."""
  raise ValueError(f"{name}={value!r} is not allowed; {allowed}.")


def is_static_number(value) -> bool:
  """Whether `value` is a Python (or NumPy) real number, not a JAX array.

  Static numbers may steer Python control flow (skip the teacher at
  alpha = 0); arrays, even concrete ones, are treated as data.
  """
  return isinstance(value, numbers.Real) and not isinstance(value, jax.Array)


def concrete_number(value) -> float | None:
  """`value` as a float if it can be read now, else None (traced, non-scalar).

  Python and NumPy numbers and concrete single-element arrays (NumPy or
  JAX) are read; tracers and anything else give None.
  """
  if isinstance(value, bool):
    return float(value)
  if is_static_number(value):
    return float(value)
  if isinstance(value, jax.core.Tracer):
    return None
  if isinstance(value, (jax.Array, np.ndarray)) and value.size == 1:
    try:
      return float(np.asarray(value).reshape(()))
    except (TypeError, jax.errors.ConcretizationTypeError):
      return None
  return None


def check_unit_interval(name: str, value) -> None:
  """`value` must lie in [0, 1] (when concrete)."""
  number = concrete_number(value)
  if number is not None and not 0.0 <= number <= 1.0:
    fail(name, value, "allowed values lie in [0, 1]")


def check_positive(name: str, value, *, finite: bool = True) -> None:
  """`value` must be > 0 (and finite, unless `finite=False`)."""
  number = concrete_number(value)
  if number is None:
    return
  if not number > 0.0 or (finite and not math.isfinite(number)):
    fail(name, value, "it must be a finite number > 0" if finite
         else "it must be > 0")


def check_non_negative(name: str, value) -> None:
  """`value` must be a finite number >= 0 (when concrete)."""
  number = concrete_number(value)
  if number is not None and not (number >= 0.0 and math.isfinite(number)):
    fail(name, value, "it must be a finite number >= 0")


# Temperatures outside this range are refused: below it the softmax is an
# argmax (use 0, greedy, where sampling allows it) and logits can overflow;
# above it the distribution is uniform to float32 precision.
MIN_TEMPERATURE = 1e-3
MAX_TEMPERATURE = 1e3


def check_temperature(name: str, value, *, greedy: bool = False) -> None:
  """`value` must lie in [1e-3, 1e3] (or be 0 with `greedy`), when concrete."""
  number = concrete_number(value)
  if number is None or (greedy and number == 0.0):
    return
  if not MIN_TEMPERATURE <= number <= MAX_TEMPERATURE:
    fail(name, value,
         f"allowed values lie in [{MIN_TEMPERATURE:g}, {MAX_TEMPERATURE:g}]"
         + (" or are 0 (greedy)" if greedy else ""))


def check_finite(name: str, value) -> None:
  """`value` must be a finite number (when concrete)."""
  number = concrete_number(value)
  if number is not None and not math.isfinite(number):
    fail(name, value, "it must be a finite number")


def check_range(name: str, value, low: float, high: float, *,
                closed_high: bool = False) -> None:
  """`value` must lie in [low, high) (or [low, high] with `closed_high`)."""
  number = concrete_number(value)
  if number is None:
    return
  inside = low <= number <= high if closed_high else low <= number < high
  if not inside:
    fail(name, value, f"allowed values lie in [{low:g}, {high:g}"
         + ("]" if closed_high else ")"))


def check_int(name: str, value, minimum: int | None = None,
              maximum: int | None = None) -> int:
  """`value` must be an int (not a bool) in [minimum, maximum]; returns it."""
  is_int = (isinstance(value, (int, np.integer))
            and not isinstance(value, bool))
  low_ok = minimum is None or (is_int and value >= minimum)
  high_ok = maximum is None or (is_int and value <= maximum)
  if not (is_int and low_ok and high_ok):
    if minimum is not None and maximum is not None:
      allowed = f"it must be an int in [{minimum}, {maximum}]"
    elif minimum is not None:
      allowed = f"it must be an int >= {minimum}"
    elif maximum is not None:
      allowed = f"it must be an int <= {maximum}"
    else:
      allowed = "it must be an int"
    fail(name, value, allowed)
  return int(value)


def check_completion_length(value: int, *, prompt_tokens: int,
                            max_positions: int, model: str,
                            name: str = "max_new_tokens") -> None:
  """Prompt plus completion must fit the model's position limit.

  Args:
    value: the completion length asked for (max_new_tokens).
    prompt_tokens: the longest prompt, in tokens.
    max_positions: the model's positions (HF `max_position_embeddings`).
    model: what to call the model in the message (its path).
    name: the setting's name in the message.
  """
  room = max_positions - prompt_tokens
  if value > room:
    fail(name, value,
         f"{model} holds {max_positions} positions (max_position_embeddings) "
         f"and the task's prompts take up to {prompt_tokens} tokens, so at "
         f"most {max(room, 0)} new tokens fit")


def check_choice(name: str, value, allowed: Collection[Any]) -> None:
  """`value` must be one of `allowed`."""
  try:
    known = value in allowed
  except TypeError:  # unhashable
    known = False
  if not known:
    fail(name, value,
         f"allowed values: {', '.join(repr(a) for a in allowed)}")
