"""distillation_loss's memory-lean path (gkdrl/losses/row_chunks.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gkdrl import losses
from gkdrl.losses import row_chunks

B, T, V = 3, 7, 40


@pytest.fixture(scope="module")
def inputs():
  rng = np.random.default_rng(0)
  f = lambda: jnp.asarray(3.0 * rng.normal(size=(B, T, V)), jnp.float32)
  mask = jnp.asarray(rng.uniform(size=(B, T)) < 0.7)
  return f(), f(), mask


def _value_and_grad(inputs, chunk_size, **kwargs):
  student, teacher, mask = inputs
  return jax.value_and_grad(
      lambda s: losses.distillation_loss(s, teacher, mask,
                                         chunk_size=chunk_size, **kwargs),
      has_aux=True)(student)


@pytest.mark.parametrize("chunk_size", [1, 4, 6, 20])  # 21 rows in all
@pytest.mark.parametrize("divergence,kwargs", [
    ("jsd", {"beta": 0.9}), ("jsd", {"beta": 0.5, "normalized": True}),
    ("jsd", {"beta": 0.2, "student_temperature": 0.5}),
    ("forward_kl", {"teacher_temperature": 0.5}),
    ("forward_kl", {"student_temperature": 2.0}),
    ("reverse_kl", {"student_temperature": 2.0}),
    ("skew_forward_kl", {"skew": 0.1}), ("tvd", {})])
@pytest.mark.parametrize("reduction", ["sequence", "token", "sum"])
def test_chunks_give_the_plain_path_values_and_gradients(
    inputs, chunk_size, divergence, kwargs, reduction):
  (want, want_metrics), want_grad = _value_and_grad(
      inputs, 0, divergence=divergence, reduction=reduction, **kwargs)
  (got, got_metrics), got_grad = _value_and_grad(
      inputs, chunk_size, divergence=divergence, reduction=reduction,
      **kwargs)
  np.testing.assert_allclose(got, want, rtol=1e-6)
  np.testing.assert_allclose(got_metrics["kl/teacher"],
                             want_metrics["kl/teacher"], rtol=1e-6)
  np.testing.assert_allclose(got_grad, want_grad, rtol=1e-5,
                             atol=1e-5 * float(jnp.max(jnp.abs(want_grad))))


def test_jsd_gradient_against_float64_numpy(inputs):
  """The chunked gradient of the token-mean JSD(0.3), by finite formula."""
  student, teacher, mask = inputs
  _, grad = _value_and_grad(inputs, 4, divergence="jsd", beta=0.3,
                            reduction="token")
  s, t = np.asarray(student, np.float64), np.asarray(teacher, np.float64)
  q = np.exp(s - s.max(-1, keepdims=True))
  q /= q.sum(-1, keepdims=True)
  p = np.exp(t - t.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  m = 0.3 * p + 0.7 * q
  # d/dq of 0.3 KL(p || m) + 0.7 KL(q || m), then through the softmax.
  dq = 0.7 * (np.log(q) - np.log(m))  # the other terms sum to a constant
  ds = q * (dq - np.sum(q * dq, -1, keepdims=True))
  want = ds * np.asarray(mask)[..., None] / np.asarray(mask).sum()
  np.testing.assert_allclose(grad, want, rtol=1e-4, atol=1e-9)


def test_no_gradient_reaches_the_teacher(inputs):
  student, teacher, mask = inputs
  grad = jax.grad(lambda t: losses.distillation_loss(
      student, t, mask, chunk_size=4)[0])(teacher)
  np.testing.assert_array_equal(grad, 0.0)


def test_vmap_over_stacked_inputs(inputs):
  student, teacher, mask = inputs
  grad_one = jax.grad(lambda s, t, m: losses.distillation_loss(
      s, t, m, chunk_size=4)[0])
  stacked = jax.vmap(grad_one)(student[None].repeat(2, 0),
                               teacher[None].repeat(2, 0),
                               mask[None].repeat(2, 0))
  np.testing.assert_allclose(stacked[1], grad_one(student, teacher, mask),
                             rtol=1e-6)


def test_bfloat16_logits_get_a_bfloat16_gradient(inputs):
  student, teacher, mask = inputs
  grad = jax.grad(lambda s: losses.distillation_loss(
      s, teacher, mask, chunk_size=4)[0])(student.astype(jnp.bfloat16))
  assert grad.dtype == jnp.bfloat16
  _, want = _value_and_grad(inputs, 0)
  np.testing.assert_allclose(np.asarray(grad, np.float32), want, rtol=0.1,
                             atol=1e-3)


def _temp_bytes(chunk_size, b=2, t=256, v=4096):
  logits, mask = jnp.zeros((b, t, v)), jnp.ones((b, t), bool)
  grad = jax.jit(jax.grad(lambda s, u: losses.distillation_loss(
      s, u, mask, chunk_size=chunk_size)[0]))
  return grad.lower(logits, logits).compile().memory_analysis(
  ).temp_size_in_bytes


def test_chunks_need_one_logits_sized_buffer_not_several():
  """XLA's own buffer accounting of the compiled forward and backward."""
  full = 2 * 256 * 4096 * 4  # one float32 [B, T, V] array
  plain, chunked = _temp_bytes(0), _temp_bytes(32)
  assert plain >= 2 * full, (plain, full)
  # The gradient it returns plus a few chunks of 32 x 4096.
  assert chunked < 1.5 * full, (chunked, full)


def test_default_chunk_is_about_a_million_logits():
  assert row_chunks.default_chunk_rows(151_936) == 6
  assert row_chunks.default_chunk_rows(8) == (1 << 20) // 8
  assert row_chunks.default_chunk_rows(1 << 23) == 1


@pytest.mark.parametrize("chunk_size", [-1, 2.5, True, "8"])
def test_bad_chunk_size(inputs, chunk_size):
  student, teacher, mask = inputs
  with pytest.raises(ValueError, match="chunk_size"):
    losses.distillation_loss(student, teacher, mask, chunk_size=chunk_size)
