"""Masked reductions of per-token values `[B, T]` to a scalar.

Named reductions (DESIGN.md):
  "sequence"  mean over each row's valid tokens, then over the rows that
              have any (paper Eq. 2; the default).
  "token"     sum over all valid tokens divided by their count (TRL's
              default); long sequences weigh more.
  "sum"       sum over each row's valid tokens, then mean over the rows that
              have any. For a policy gradient this is plain REINFORCE: the
              advantage multiplies the whole sequence's log-probability.

Rows (or whole batches) without a valid token contribute nothing and never
produce NaN, neither in the value nor in the gradient. Invalid positions are
removed with `where`, never multiplied by 0, so an inf or NaN there cannot
leak; callers whose values have NaN gradients at masked positions should
sanitise their inputs with the double-where pattern.
"""

import chex
import jax
import jax.numpy as jnp

from gkdrl import validation

Array = jax.Array

REDUCTIONS = ("sequence", "token", "sum")


def masked_reduce(values: Array, mask: Array, *,
                  reduction: str = "sequence") -> Array:
  """Reduces `[B, T]` values over valid positions with a named reduction.

  Args:
    values: `[B, T]` per-token values.
    mask: `[B, T]` 0/1 or bool, 1 where the token is valid.
    reduction: "sequence", "token" or "sum" (see the module docstring).

  Returns:
    A float32 scalar; 0 when no position is valid.
  """
  chex.assert_rank([values, mask], 2)
  chex.assert_equal_shape([values, mask])
  validation.check_choice("reduction", reduction, REDUCTIONS)
  valid = mask.astype(bool)
  values = jnp.where(valid, values.astype(jnp.float32), 0.0)  # [B, T]
  counts = jnp.sum(valid, axis=-1).astype(jnp.float32)  # [B]
  if reduction == "token":
    return jnp.sum(values) / jnp.maximum(jnp.sum(counts), 1.0)
  row_sums = jnp.sum(values, axis=-1)  # [B]
  if reduction == "sequence":
    row_values = row_sums / jnp.maximum(counts, 1.0)
  else:
    row_values = row_sums
  has_tokens = counts > 0  # [B]
  return jnp.sum(jnp.where(has_tokens, row_values, 0.0)) / jnp.maximum(
      reduction_denominator(mask, reduction=reduction), 1.0)


def reduction_denominator(mask: Array, *, reduction: str = "sequence"
                          ) -> Array:
  """What `masked_reduce` divides by (before clamping it to >= 1).

  The number of valid tokens for "token", of rows with any valid token for
  "sequence" and "sum". A reduction of a batch is then the weighted sum of
  the reductions of its parts (micro-batches, see
  `gkdrl.agents.accumulation`), each weighted by its denominator over the
  whole batch's.

  Args:
    mask: `[B, T]` 0/1 or bool, 1 where the token is valid.
    reduction: "sequence", "token" or "sum".

  Returns:
    A float32 scalar, >= 0.
  """
  chex.assert_rank(mask, 2)
  validation.check_choice("reduction", reduction, REDUCTIONS)
  valid = mask.astype(bool)
  if reduction == "token":
    return jnp.sum(valid, dtype=jnp.float32)
  return jnp.sum(jnp.any(valid, axis=-1), dtype=jnp.float32)


def masked_mean(values: Array, mask: Array, *, mode: str = "sequence"
                ) -> Array:
  """Masked mean of `[B, T]` values (paper Eq. 2 with mode="sequence").

      sequence: (1 / |B'|) sum_{b in B'} (1 / L_b) sum_t mask[b, t] v[b, t]
      token:    sum_{b, t} mask[b, t] v[b, t] / sum_{b, t} mask[b, t]

  where L_b is row b's number of valid tokens and B' the rows with L_b > 0.

  Args:
    values: `[B, T]` per-token values.
    mask: `[B, T]` 0/1 or bool, 1 where the token is valid.
    mode: "sequence" or "token".

  Returns:
    A float32 scalar; 0 when no position is valid.
  """
  validation.check_choice("mode", mode, ("sequence", "token"))
  return masked_reduce(values, mask, reduction=mode)
