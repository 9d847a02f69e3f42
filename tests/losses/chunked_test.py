"""chunked_distillation_loss equals distillation_loss on the logits."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gkdrl import losses

B, T, DS, DT, V = 2, 11, 8, 12, 50


@pytest.fixture(scope="module")
def inputs():
  rng = np.random.default_rng(0)
  f = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)
  mask = jnp.asarray(rng.uniform(size=(B, T)) < 0.8)
  return f(B, T, DS), f(DS, V), f(B, T, DT), f(DT, V), mask


@pytest.mark.parametrize("chunk_size", [1, 4, 11, 64])
@pytest.mark.parametrize("divergence,kwargs", [
    ("jsd", {"beta": 0.9}), ("forward_kl", {"teacher_temperature": 0.5}),
    ("jsd", {"beta": 0.3, "normalized": True, "student_temperature": 2.0}),
    ("forward_kl", {"student_temperature": 0.7}),
    ("skew_reverse_kl", {"skew": 0.2})])
def test_values_and_gradients_match_the_logits_path(inputs, chunk_size,
                                                    divergence, kwargs):
  sh, su, th, tu, mask = inputs

  def chunked(sh, su):
    return losses.chunked_distillation_loss(
        sh, su, th, tu, mask, divergence=divergence, chunk_size=chunk_size,
        **kwargs)

  def direct(sh, su):
    return losses.distillation_loss(sh @ su, th @ tu, mask,
                                    divergence=divergence, **kwargs)

  (got, got_metrics), got_grads = jax.value_and_grad(
      chunked, argnums=(0, 1), has_aux=True)(sh, su)
  (want, want_metrics), want_grads = jax.value_and_grad(
      direct, argnums=(0, 1), has_aux=True)(sh, su)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  np.testing.assert_allclose(got_metrics["kl/teacher"],
                             want_metrics["kl/teacher"], rtol=1e-5)
  for g, w in zip(got_grads, want_grads):
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-6)


def test_no_gradient_reaches_the_teacher(inputs):
  sh, su, th, tu, mask = inputs
  grads = jax.grad(lambda th, tu: losses.chunked_distillation_loss(
      sh, su, th, tu, mask, chunk_size=4)[0], argnums=(0, 1))(th, tu)
  for g in grads:
    np.testing.assert_array_equal(g, 0.0)


def _temp_bytes(fn, length, d=16, v=4096, b=2):
  sh, su, mask = jnp.zeros((b, length, d)), jnp.zeros((d, v)), jnp.ones(
      (b, length))
  grad = jax.jit(jax.grad(lambda sh, su: fn(sh, su, mask), argnums=(0, 1)))
  return grad.lower(sh, su).compile().memory_analysis().temp_size_in_bytes


def test_peak_memory_grows_with_the_chunk_not_with_t():
  """XLA's own buffer accounting of the compiled backward pass."""
  chunked = lambda sh, su, m: losses.chunked_distillation_loss(
      sh, su, sh, su, m, chunk_size=8)[0]
  direct = lambda sh, su, m: losses.distillation_loss(sh @ su, sh @ su, m)[0]
  full_256 = 2 * 256 * 4096 * 4  # one float32 [B, T, V] array at T = 256
  c64, c256 = _temp_bytes(chunked, 64), _temp_bytes(chunked, 256)
  d256 = _temp_bytes(direct, 256)
  assert c256 < 1.5 * c64, (c64, c256)  # flat in T
  assert c256 < full_256 / 4, (c256, full_256)
  assert d256 >= full_256  # the logits path holds [B, T, V] arrays


def test_bad_arguments(inputs):
  sh, su, th, tu, mask = inputs
  with pytest.raises(ValueError, match="chunk_size=0"):
    losses.chunked_distillation_loss(sh, su, th, tu, mask, chunk_size=0)
  with pytest.raises(ValueError, match="Vocabularies differ"):
    losses.chunked_distillation_loss(sh, su, th, tu[:, :10], mask)


def test_gradient_accumulated_in_vocabulary_slices_is_exact():
  """At V = 40,960 the unembedding's gradient is summed in 4 slices."""
  from gkdrl.losses import chunked  # pylint: disable=g-import-not-at-top
  v = 40_960
  assert chunked._vocab_slices(v) == 4  # pylint: disable=protected-access
  rng = np.random.default_rng(1)
  f = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)
  sh, su, th, tu = f(2, 5, 4), f(4, v), f(2, 5, 6), f(6, v)
  mask = jnp.asarray([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
  chunked_loss = lambda sh, su: losses.chunked_distillation_loss(
      sh, su, th, tu, mask, divergence="reverse_kl", chunk_size=2)[0]
  direct = lambda sh, su: losses.distillation_loss(
      sh @ su, th @ tu, mask, divergence="reverse_kl")[0]
  got = jax.grad(chunked_loss, argnums=(0, 1))(sh, su)
  want = jax.grad(direct, argnums=(0, 1))(sh, su)
  for g, w in zip(got, want):
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("vocab, slices", [(50, 1), (32_768, 2),
                                           (151_936, 16), (49_152, 3),
                                           (65_537, 1)])
def test_vocab_slices_divide_the_vocabulary(vocab, slices):
  from gkdrl.losses import chunked  # pylint: disable=g-import-not-at-top
  n = chunked._vocab_slices(vocab)  # pylint: disable=protected-access
  assert n == slices and vocab % n == 0
