"""Masked reductions, including empty rows and empty batches."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gkdrl import losses


def np_reduce(values, mask, reduction):
  values, mask = np.asarray(values, np.float64), np.asarray(mask, bool)
  if reduction == "token":
    return values[mask].sum() / max(mask.sum(), 1)
  rows = [values[b][mask[b]] for b in range(len(values)) if mask[b].any()]
  if not rows:
    return 0.0
  per_row = [r.mean() if reduction == "sequence" else r.sum() for r in rows]
  return float(np.mean(per_row))


VALUES = np.array([[1.0, 2.0, 3.0, 4.0],
                   [10.0, 20.0, 0.0, 0.0],
                   [5.0, 5.0, 5.0, 5.0]], np.float32)
MASK = np.array([[1, 1, 1, 1], [1, 1, 0, 0], [0, 0, 0, 0]], np.int32)


def test_hand_computed_values():
  # sequence: rows (2.5, 15) and the empty row contributes nothing.
  assert float(losses.masked_mean(VALUES, MASK)) == pytest.approx(8.75)
  # token: (10 + 30) / 6.
  assert float(losses.masked_mean(VALUES, MASK, mode="token")) == (
      pytest.approx(40 / 6))
  assert float(losses.masked_reduce(VALUES, MASK, reduction="sum")) == (
      pytest.approx(20.0))


@pytest.mark.parametrize("reduction", losses.REDUCTIONS)
def test_random_against_numpy(reduction):
  rng = np.random.default_rng(0)
  values = rng.normal(size=(6, 9)).astype(np.float32)
  mask = rng.uniform(size=(6, 9)) < 0.5
  mask[2] = False
  got = losses.masked_reduce(values, mask, reduction=reduction)
  np.testing.assert_allclose(got, np_reduce(values, mask, reduction),
                             rtol=1e-5)


@pytest.mark.parametrize("reduction", losses.REDUCTIONS)
def test_all_empty_batch_is_zero_with_zero_gradient(reduction):
  values = jnp.ones((3, 4))
  mask = jnp.zeros((3, 4), bool)
  value, grad = jax.value_and_grad(
      lambda v: losses.masked_reduce(v, mask, reduction=reduction))(values)
  assert float(value) == 0.0
  np.testing.assert_array_equal(grad, 0.0)


@pytest.mark.parametrize("reduction", losses.REDUCTIONS)
def test_inf_and_nan_at_masked_positions_do_not_leak(reduction):
  values = VALUES.copy()
  values[1, 2:] = [np.inf, np.nan]
  values[2] = np.nan
  value, grad = jax.value_and_grad(
      lambda v: losses.masked_reduce(v, MASK, reduction=reduction))(values)
  np.testing.assert_allclose(value, np_reduce(VALUES, MASK, reduction))
  assert np.all(np.isfinite(grad))
  np.testing.assert_array_equal(grad[MASK == 0], 0.0)


def test_sequence_mode_weighs_rows_equally():
  grad = jax.grad(lambda v: losses.masked_mean(v, MASK))(VALUES)
  # Two non-empty rows, of 4 and 2 tokens: weights 1/8 and 1/4.
  np.testing.assert_allclose(grad[0], 1 / 8)
  np.testing.assert_allclose(grad[1], [1 / 4, 1 / 4, 0, 0])


def test_bad_arguments():
  with pytest.raises(ValueError, match="mode='sum'"):
    losses.masked_mean(VALUES, MASK, mode="sum")
  with pytest.raises(ValueError, match="reduction='mean'"):
    losses.masked_reduce(VALUES, MASK, reduction="mean")
  with pytest.raises(AssertionError):
    losses.masked_mean(VALUES, MASK[:, :2])
