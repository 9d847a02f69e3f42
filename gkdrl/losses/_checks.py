"""Argument checks shared by the loss functions.

Checks apply to Python numbers only: traced values (for example an alpha
that is vmapped over) cannot be inspected at trace time and are the caller's
responsibility.
"""

import numbers
from collections.abc import Collection

import jax


def is_static_number(value) -> bool:
  """Whether `value` is a concrete Python (or NumPy) real number."""
  return isinstance(value, numbers.Real) and not isinstance(value, jax.Array)


def check_unit_interval(name: str, value) -> None:
  """Raises ValueError if a static `value` lies outside [0, 1]."""
  if is_static_number(value) and not 0.0 <= float(value) <= 1.0:
    raise ValueError(f"{name}={value!r} is outside the allowed range [0, 1].")


def check_positive(name: str, value) -> None:
  """Raises ValueError if a static `value` is not strictly positive."""
  if is_static_number(value) and not float(value) > 0.0:
    raise ValueError(f"{name}={value!r} must be > 0.")


def check_non_negative(name: str, value) -> None:
  """Raises ValueError if a static `value` is negative."""
  if is_static_number(value) and not float(value) >= 0.0:
    raise ValueError(f"{name}={value!r} must be >= 0.")


def check_int(name: str, value, minimum: int) -> None:
  """Raises ValueError unless `value` is an int (not a bool) >= `minimum`."""
  if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
    raise ValueError(f"{name}={value!r} must be an int >= {minimum}.")


def check_choice(name: str, value, allowed: Collection[str]) -> None:
  """Raises ValueError if `value` is not one of the `allowed` names."""
  if value not in allowed:
    raise ValueError(
        f"{name}={value!r} is not recognised; allowed values: "
        f"{', '.join(repr(a) for a in allowed)}."
    )
