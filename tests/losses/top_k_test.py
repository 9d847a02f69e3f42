"""Tests of gkdrl.losses.top_k against the full divergences and NumPy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gkdrl import losses
from gkdrl.losses import top_k

KWARGS = {"forward_kl": {}, "reverse_kl": {}, "tvd": {},
          "jsd": {"beta": 0.3}, "skew_forward_kl": {"skew": 0.1},
          "skew_reverse_kl": {"skew": 0.2}}
V = 40


def _logits(seed, scale, shape=(3, 5, V)):
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape) * scale,
                     jnp.float32)


def _np_log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _np_divergence(name, p, q, beta=None, skew=None):
  """Float64 divergences of probability vectors `[..., N]`."""
  def kl(a, b):
    with np.errstate(divide="ignore", invalid="ignore"):
      return np.where(a > 0, a * (np.log(a) - np.log(b)), 0.0).sum(-1)
  if name == "forward_kl":
    return kl(p, q)
  if name == "reverse_kl":
    return kl(q, p)
  if name == "tvd":
    return 0.5 * np.abs(p - q).sum(-1)
  if name == "jsd":
    m = beta * p + (1 - beta) * q
    return beta * kl(p, m) + (1 - beta) * kl(q, m)
  if name == "skew_forward_kl":
    return kl(p, skew * p + (1 - skew) * q)
  return kl(q, (1 - skew) * p + skew * q)


def _np_bucketed(name, student, teacher, k, **kwargs):
  """The (k + 1)-bucket divergence in float64 NumPy."""
  p = np.exp(_np_log_softmax(np.asarray(teacher, np.float64)))
  q = np.exp(_np_log_softmax(np.asarray(student, np.float64)))
  ids = np.argsort(-p, axis=-1)[..., :k]
  p_k = np.take_along_axis(p, ids, -1)
  q_k = np.take_along_axis(q, ids, -1)
  p_b = np.concatenate([p_k, 1 - p_k.sum(-1, keepdims=True)], -1)
  q_b = np.concatenate([q_k, 1 - q_k.sum(-1, keepdims=True)], -1)
  return _np_divergence(name, p_b, q_b, **kwargs)


@pytest.mark.parametrize("name", sorted(KWARGS))
def test_equals_full_divergence_at_k_equal_v(name):
  student, teacher = _logits(0, 2.0), _logits(1, 3.0)
  ids, logp, tail = losses.top_k_teacher(teacher, V)
  got = losses.top_k_divergence(student, ids, logp, name,
                                teacher_tail_log_prob=tail, **KWARGS[name])
  want = losses.divergence(name, student, teacher, **KWARGS[name])
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", sorted(KWARGS))
@pytest.mark.parametrize("k", [1, 5, 17])
def test_matches_float64_bucketed_reference(name, k):
  student, teacher = _logits(2, 2.0), _logits(3, 3.0)
  ids, logp, tail = losses.top_k_teacher(teacher, k)
  got = losses.top_k_divergence(student, ids, logp, name,
                                teacher_tail_log_prob=tail, **KWARGS[name])
  want = _np_bucketed(name, student, teacher, k, **KWARGS[name])
  np.testing.assert_allclose(got, want, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("name", sorted(KWARGS))
def test_error_falls_as_k_grows_on_a_peaked_teacher(name):
  student, teacher = _logits(4, 1.0), _logits(5, 6.0)
  full = np.asarray(losses.divergence(name, student, teacher,
                                      **KWARGS[name]))
  errors = []
  for k in (1, 4, 16, 32):
    ids, logp, tail = losses.top_k_teacher(teacher, k)
    approx = losses.top_k_divergence(student, ids, logp, name,
                                     teacher_tail_log_prob=tail,
                                     **KWARGS[name])
    # An f-divergence of coarse-grained distributions is never above the
    # full one (data-processing inequality).
    assert np.all(np.asarray(approx) <= full + 1e-5)
    errors.append(float(np.mean(full - np.asarray(approx))))
  assert errors == sorted(errors, reverse=True), errors
  assert errors[-1] < 0.25 * errors[0], errors


def test_teacher_temperature_is_applied_before_the_top_k():
  teacher = _logits(6, 3.0)
  ids, logp, tail = losses.top_k_teacher(teacher, 7, temperature=2.0)
  want = _np_log_softmax(np.asarray(teacher, np.float64) / 2.0)
  np.testing.assert_allclose(logp, np.take_along_axis(want, np.asarray(ids),
                                                      -1), atol=1e-5)
  assert np.all(np.diff(np.asarray(logp), axis=-1) <= 0)


@pytest.mark.parametrize("name", sorted(KWARGS))
@pytest.mark.parametrize("k", [3, V])
def test_gradients_finite_and_match_bucketed_reference(name, k):
  student, teacher = _logits(7, 2.0), _logits(8, 4.0)
  # A masked teacher token (-1e9) and a masked student token.
  teacher = teacher.at[..., 0].set(-1e9)
  student = student.at[..., 1].set(-1e9)
  ids, logp, tail = losses.top_k_teacher(teacher, k)
  grad = jax.grad(lambda s: jnp.sum(losses.top_k_divergence(
      s, ids, logp, name, teacher_tail_log_prob=tail,
      **KWARGS[name])))(student)
  assert np.all(np.isfinite(grad))
  if k == V:
    full = jax.grad(lambda s: jnp.sum(losses.divergence(
        name, s, teacher, **KWARGS[name])))(student)
    np.testing.assert_allclose(grad, full, atol=1e-5, rtol=1e-5)


def test_zero_mass_teacher_entries_give_finite_values():
  teacher = jnp.full((2, V), -jnp.inf).at[:, :3].set(0.0)
  student = _logits(9, 1.0, (2, V))
  ids, logp, tail = losses.top_k_teacher(teacher, 5)  # two -inf log-probs
  for name in KWARGS:
    value, grad = jax.value_and_grad(lambda s, n=name: jnp.sum(
        losses.top_k_divergence(s, ids, logp, n, teacher_tail_log_prob=tail,
                                **KWARGS[n])))(student)
    assert np.isfinite(value) and np.all(np.isfinite(grad)), name


def test_distillation_loss_equals_full_at_k_equal_v():
  student, teacher = _logits(10, 2.0), _logits(11, 3.0)
  mask = jnp.asarray(np.random.default_rng(0).random((3, 5)) > 0.3)
  got = losses.top_k_distillation_loss(student,
                                       losses.top_k_teacher(teacher, V), mask,
                                       divergence="jsd")
  want = losses.distillation_loss(student, teacher, mask, divergence="jsd",
                                  chunk_size=0)
  for key in ("loss/divergence", "kl/teacher"):
    np.testing.assert_allclose(got[1][key], want[1][key], atol=1e-5)


def test_rejects_bad_k_and_teacher_temperature():
  teacher = _logits(12, 1.0)
  with pytest.raises(ValueError, match="teacher_top_k=0 is not allowed"):
    losses.top_k_teacher(teacher, 0)
  ids, logp, tail = losses.top_k_teacher(teacher, 4)
  with pytest.raises(ValueError, match="teacher_temperature"):
    losses.top_k_divergence(teacher, ids, logp, "forward_kl",
                            teacher_temperature=2.0)


def test_tail_from_log_probs_alone_matches_the_exact_tail():
  student, teacher = _logits(13, 2.0), _logits(14, 2.0)
  ids, logp, tail = losses.top_k_teacher(teacher, 6)
  exact = losses.top_k_divergence(student, ids, logp, "jsd", beta=0.5,
                                  teacher_tail_log_prob=tail)
  derived = losses.top_k_divergence(student, ids, logp, "jsd", beta=0.5)
  np.testing.assert_allclose(derived, exact, atol=1e-5)


def test_log1mexp_is_accurate_at_both_ends():
  x = jnp.asarray([-1e-6, -0.5, -30.0, 0.0])
  got = np.asarray(top_k._log1mexp(x))
  want = np.log1p(-np.exp(np.float64([-1e-6, -0.5, -30.0])))
  np.testing.assert_allclose(got[:3], want, rtol=1e-5)
  assert got[3] == top_k.LOG_ZERO
