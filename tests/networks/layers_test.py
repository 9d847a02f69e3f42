"""Tests for gkdrl.networks.layers against float64 NumPy references."""

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gkdrl import networks
from gkdrl.networks import layers


def _rotary_reference(x, positions, theta):
  """HF's rotate_half rope in float64: x * cos + rotate_half(x) * sin."""
  dh = x.shape[-1]
  inv_freq = theta ** (-np.arange(0, dh, 2) / dh)
  angles = positions[..., None] * inv_freq  # [B, L, Dh/2]
  cos = np.cos(np.concatenate([angles, angles], -1))[:, :, None]
  sin = np.sin(np.concatenate([angles, angles], -1))[:, :, None]
  rotated = np.concatenate([-x[..., dh // 2:], x[..., :dh // 2]], -1)
  return x * cos + rotated * sin


def test_rotary_matches_reference_and_is_relative():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 5, 3, 8))
  positions = np.array([[0, 1, 2, 3, 4], [7, 8, 9, 10, 11]])
  got = layers.rotary(jnp.asarray(x, jnp.float32), positions, 500.0)
  np.testing.assert_allclose(got, _rotary_reference(x, positions, 500.0),
                             atol=1e-5)
  # q(m) . k(n) depends on m - n only.
  q, k = x[:1, :1], x[1:, 1:2]
  dots = [np.sum(np.asarray(layers.rotary(jnp.asarray(q), np.array([[m]]),
                                          500.0))
                 * np.asarray(layers.rotary(jnp.asarray(k), np.array([[n]]),
                                            500.0)))
          for m, n in ((3, 1), (10, 8))]
  assert dots[0] == pytest.approx(dots[1], rel=1e-4)


def test_tabulated_rotary_matches_reference_and_fills_out_of_range_with_nan():
  rng = np.random.default_rng(3)
  x = rng.normal(size=(2, 6, 3, 8))
  positions = np.array([[0, 0, 1, 2, 3, 4], [0, 1, 2, 3, 4, 5]])
  tables = jax.jit(layers.rotary_tables, static_argnums=(1, 2, 3))(
      positions, 8, 500.0, 6)
  got = layers.apply_rotary(jnp.asarray(x, jnp.float32), tables)
  np.testing.assert_allclose(got, _rotary_reference(x, positions, 500.0),
                             atol=1e-5)
  np.testing.assert_allclose(
      got, layers.rotary(jnp.asarray(x, jnp.float32), positions, 500.0),
      atol=1e-6)
  # A position the table does not hold cannot pass silently.
  cos, sin = layers.rotary_tables(np.array([[0, 6]]), 8, 500.0, 6)
  assert np.isfinite(cos[0, 0]).all() and np.isnan(cos[0, 1]).all()
  assert np.isnan(sin[0, 1]).all()


@pytest.mark.parametrize("norm", ["layer", "rms"])
def test_norm_matches_float64_reference(norm):
  config = networks.ModelConfig(vocab_size=10, d_model=6, n_layers=1,
                                n_heads=3, d_ff=8, norm=norm, norm_eps=1e-5,
                                position="learned")
  rng = np.random.default_rng(1)
  x = rng.normal(size=(3, 6)) * 3 + 1
  scale, offset = rng.normal(size=6), rng.normal(size=6)
  f = hk.without_apply_rng(hk.transform(
      lambda x: layers.Norm(config, name="norm")(x)))
  params = {"norm": {"scale": jnp.asarray(scale, jnp.float32)}}
  if norm == "layer":
    params["norm"]["offset"] = jnp.asarray(offset, jnp.float32)
    centred = x - x.mean(-1, keepdims=True)
    expected = centred / np.sqrt((centred ** 2).mean(-1, keepdims=True)
                                 + 1e-5) * scale + offset
  else:
    expected = x / np.sqrt((x ** 2).mean(-1, keepdims=True) + 1e-5) * scale
  got = f.apply(params, jnp.asarray(x, jnp.float32))
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
  bf16 = f.apply(params, jnp.asarray(x, jnp.bfloat16))
  assert bf16.dtype == jnp.bfloat16


def _dot_operand_ranks(fn, *args):
  """Ranks of the operands of every dot_general in `fn`'s jaxpr."""
  ranks = []

  def visit(jaxpr):
    for eqn in jaxpr.eqns:
      if eqn.primitive.name == "dot_general":
        ranks.append(tuple(v.aval.ndim for v in eqn.invars))
      for sub in jax.core.jaxprs_in_params(eqn.params):
        visit(sub)

  visit(jax.make_jaxpr(fn)(*args).jaxpr)
  return ranks


def test_linear_is_x_w_plus_b_with_2d_weight_gradients():
  rng = np.random.default_rng(2)
  x = rng.normal(size=(2, 3, 4, 5))  # two batch axes and a length axis
  w, b = rng.normal(size=(5, 6)), rng.normal(size=6)
  dy = rng.normal(size=(2, 3, 4, 6))
  f = hk.without_apply_rng(hk.transform(
      lambda x: layers.Linear(6, name="proj")(x)))
  params = f.init(jax.random.key(0), jnp.zeros((2, 3, 4, 5)))
  assert jax.tree.map(jnp.shape, params) == {"proj": {"w": (5, 6), "b": (6,)}}
  params = {"proj": {"w": jnp.asarray(w, jnp.float32),
                     "b": jnp.asarray(b, jnp.float32)}}
  xs = jnp.asarray(x, jnp.float32)
  np.testing.assert_allclose(f.apply(params, xs), x @ w + b, rtol=1e-5,
                             atol=1e-5)

  def loss(params, xs):
    return jnp.sum(f.apply(params, xs) * jnp.asarray(dy, jnp.float32))

  grads, dx = jax.grad(loss, (0, 1))(params, xs)
  np.testing.assert_allclose(grads["proj"]["w"],
                             x.reshape(-1, 5).T @ dy.reshape(-1, 6), rtol=1e-5,
                             atol=1e-4)
  np.testing.assert_allclose(grads["proj"]["b"], dy.sum((0, 1, 2)),
                             rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(dx, dy @ w.T, rtol=1e-5, atol=1e-4)
  # Forward and backward products are all plain matrix products.
  assert set(_dot_operand_ranks(jax.grad(loss), params, xs)) == {(2, 2)}


def test_unembed_gives_float32_logits_from_2d_products():
  rng = np.random.default_rng(3)
  h, w = rng.normal(size=(2, 3, 4)), rng.normal(size=(4, 7))
  got = layers.unembed(jnp.asarray(h, jnp.bfloat16), jnp.asarray(w, jnp.bfloat16))
  assert got.shape == (2, 3, 7) and got.dtype == jnp.float32
  exact = layers.unembed(jnp.asarray(h, jnp.float32), jnp.asarray(w, jnp.float32))
  np.testing.assert_allclose(exact, h @ w, rtol=1e-5, atol=1e-5)
  grad = jax.grad(lambda w: jnp.sum(layers.unembed(jnp.asarray(h, jnp.float32),
                                                   w) ** 2))
  assert set(_dot_operand_ranks(grad, jnp.asarray(w, jnp.float32))) == {(2, 2)}


def test_softmax_values_and_derivatives_match_float64_reference():
  rng = np.random.default_rng(3)
  x = rng.normal(size=(3, 4, 7)) * 3.0
  x[0, 1, 2:] = layers.MASKED  # masked scores, as attention writes them
  cotangent = rng.normal(size=x.shape)
  tangent = rng.normal(size=x.shape)
  e = np.exp(x - x.max(-1, keepdims=True))
  y = e / e.sum(-1, keepdims=True)
  # d y_i / d x_j = y_i (delta_ij - y_j): the VJP and the JVP are the same
  # symmetric Jacobian applied to a vector.
  jacobian_times = lambda v: y * (v - (y * v).sum(-1, keepdims=True))
  x32 = jnp.asarray(x, jnp.float32)
  got = layers.softmax(x32)
  np.testing.assert_array_equal(got, jax.nn.softmax(x32, axis=-1))
  np.testing.assert_allclose(got, y, atol=1e-6)
  (vjp,) = jax.vjp(layers.softmax, x32)[1](jnp.asarray(cotangent,
                                                        jnp.float32))
  np.testing.assert_allclose(vjp, jacobian_times(cotangent), atol=1e-5)
  _, jvp = jax.jvp(layers.softmax, (x32,), (jnp.asarray(tangent,
                                                         jnp.float32),))
  np.testing.assert_allclose(jvp, jacobian_times(tangent), atol=1e-5)
  assert np.all(np.asarray(vjp)[0, 1, 2:] == 0)
