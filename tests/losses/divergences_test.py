"""Divergences against float64 NumPy references written here."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gkdrl import losses

V = 11
TEMPERATURES = [(1.0, 1.0), (0.7, 1.0), (1.0, 0.1), (2.0, 0.5)]


def np_softmax(logits, temperature):
  z = logits.astype(np.float64) / temperature
  z = z - z.max(-1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(-1, keepdims=True)


def np_kl(a, b):
  with np.errstate(divide="ignore", invalid="ignore"):
    terms = np.where(a > 0, a * (np.log(a) - np.log(b)), 0.0)
  return terms.sum(-1)


def np_divergence(name, s, t, st=1.0, tt=1.0, beta=None, skew=None,
                  normalized=False):
  q, p = np_softmax(s, st), np_softmax(t, tt)
  if name == "forward_kl":
    return np_kl(p, q)
  if name == "reverse_kl":
    return np_kl(q, p)
  if name == "tvd":
    return 0.5 * np.abs(p - q).sum(-1)
  if name == "skew_forward_kl":
    return np_kl(p, skew * p + (1 - skew) * q)
  if name == "skew_reverse_kl":
    return np_kl(q, (1 - skew) * p + skew * q)
  assert name == "jsd"
  if beta == 0:
    return np_kl(p, q)
  if beta == 1:
    return np_kl(q, p)
  m = beta * p + (1 - beta) * q
  value = beta * np_kl(p, m) + (1 - beta) * np_kl(q, m)
  return value / (beta * (1 - beta)) if normalized else value


CASES = (
    [("forward_kl", {}), ("reverse_kl", {}), ("tvd", {})]
    + [("jsd", {"beta": b}) for b in (0.0, 0.1, 0.5, 0.9, 1.0)]
    + [("jsd", {"beta": b, "normalized": True}) for b in (0.1, 0.5, 0.9)]
    + [(n, {"skew": a}) for n in ("skew_forward_kl", "skew_reverse_kl")
       for a in (0.0, 0.1, 0.5, 1.0)]
)


@pytest.fixture(scope="module")
def logits():
  rng = np.random.default_rng(0)
  s = rng.normal(size=(3, 4, V)).astype(np.float32) * 2
  t = rng.normal(size=(3, 4, V)).astype(np.float32) * 2
  return s, t


@pytest.mark.parametrize("name,kwargs", CASES)
@pytest.mark.parametrize("st,tt", TEMPERATURES)
def test_matches_numpy_reference(logits, name, kwargs, st, tt):
  s, t = logits
  got = losses.divergence(name, s, t, student_temperature=st,
                          teacher_temperature=tt, **kwargs)
  want = np_divergence(name, s, t, st, tt, **kwargs)
  assert got.dtype == jnp.float32
  assert got.shape == s.shape[:-1]
  np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("name,kwargs", CASES[:8])
def test_jit_and_vmap_agree(logits, name, kwargs):
  s, t = logits
  fn = lambda a, b: losses.divergence(name, a, b, **kwargs)
  eager = fn(s, t)
  np.testing.assert_allclose(jax.jit(fn)(s, t), eager, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(jax.vmap(fn)(s, t), eager, rtol=1e-6, atol=1e-7)


def test_jsd_endpoints_are_exactly_the_kls(logits):
  s, t = logits
  np.testing.assert_array_equal(losses.generalized_jsd(s, t, beta=0.0),
                                losses.forward_kl(s, t))
  np.testing.assert_array_equal(losses.generalized_jsd(s, t, beta=1.0),
                                losses.reverse_kl(s, t))


def test_normalized_jsd_tends_to_the_kls(logits):
  s, t = logits
  fkl, rkl = losses.forward_kl(s, t), losses.reverse_kl(s, t)
  gaps = []
  for eps in (1e-2, 1e-3, 1e-4):
    near0 = losses.generalized_jsd(s, t, beta=eps, normalized=True)
    near1 = losses.generalized_jsd(s, t, beta=1 - eps, normalized=True)
    gaps.append((np.max(np.abs(near0 / fkl - 1)),
                 np.max(np.abs(near1 / rkl - 1))))
  # The gap closes like O(eps) (slowly here: these logits are far apart).
  assert gaps[0][0] > gaps[1][0] > gaps[2][0]
  assert gaps[0][1] > gaps[1][1] > gaps[2][1]
  assert gaps[2][0] < 0.01 and gaps[2][1] < 0.03


def test_unnormalized_jsd_shrinks_near_the_ends(logits):
  s, t = logits
  small = losses.generalized_jsd(s, t, beta=1e-3)
  np.testing.assert_allclose(small, 1e-3 * losses.forward_kl(s, t),
                             rtol=5e-2)
  assert np.all(small < 0.01 * losses.forward_kl(s, t))


def test_traced_beta_matches_static(logits):
  s, t = logits
  fn = jax.jit(lambda b: losses.generalized_jsd(s, t, beta=b))
  for beta in (0.0, 0.3, 1.0):
    np.testing.assert_allclose(
        fn(jnp.float32(beta)), losses.generalized_jsd(s, t, beta=beta),
        rtol=1e-5, atol=1e-6)
  grads = jax.grad(lambda x: jnp.sum(losses.generalized_jsd(
      x, t, beta=jnp.float32(0.0))))(jnp.asarray(s))
  assert np.all(np.isfinite(grads))


ALL = [("forward_kl", {}), ("reverse_kl", {}), ("tvd", {}),
       ("jsd", {"beta": 0.9}), ("jsd", {"beta": 0.5, "normalized": True}),
       ("skew_forward_kl", {"skew": 0.1}), ("skew_reverse_kl", {"skew": 0.1})]


def _value_and_grad(name, kwargs, s, t):
  fn = lambda a, b: jnp.sum(losses.divergence(name, a, b, **kwargs))
  return jax.value_and_grad(fn, argnums=(0, 1))(s, t)


@pytest.mark.parametrize("name,kwargs", ALL)
def test_masked_logits_are_finite(name, kwargs):
  rng = np.random.default_rng(1)
  s = rng.normal(size=(2, V)).astype(np.float32)
  t = rng.normal(size=(2, V)).astype(np.float32)
  s[:, :3] = -1e9  # the student rules out tokens the teacher allows
  t[:, 5:8] = -1e9  # and the other way round
  value, (gs, gt) = _value_and_grad(name, kwargs, s, t)
  assert np.isfinite(value)
  assert np.all(np.isfinite(gs)) and np.all(np.isfinite(gt))


@pytest.mark.parametrize("name,kwargs", ALL)
def test_identical_distributions_give_zero(name, kwargs):
  rng = np.random.default_rng(2)
  s = (rng.normal(size=(4, 1000)) * 5).astype(np.float32)
  s[:, :10] = -1e9
  values = losses.divergence(name, s, s, **kwargs)
  assert np.all(values >= -1e-6)
  np.testing.assert_allclose(values, 0.0, atol=1e-5)
  _, (gs, _) = _value_and_grad(name, kwargs, s, s)
  assert np.all(np.isfinite(gs))


@pytest.mark.parametrize("name,kwargs", ALL)
def test_near_one_hot_teacher(name, kwargs):
  rng = np.random.default_rng(3)
  s = rng.normal(size=(3, V)).astype(np.float32)
  t = np.full((3, V), -30.0, np.float32)
  t[:, 2] = 30.0
  value, (gs, _) = _value_and_grad(name, kwargs, s, t)
  want = np_divergence(name, s, t, **kwargs).sum()
  np.testing.assert_allclose(value, want, rtol=1e-4)
  assert np.all(np.isfinite(gs))


@pytest.mark.parametrize("name,kwargs", ALL)
def test_bfloat16_inputs_compute_in_float32(name, kwargs):
  rng = np.random.default_rng(4)
  s = jnp.asarray(rng.normal(size=(2, 3, V)), jnp.bfloat16)
  t = jnp.asarray(rng.normal(size=(2, 3, V)), jnp.bfloat16)
  got = losses.divergence(name, s, t, **kwargs)
  assert got.dtype == jnp.float32
  want = np_divergence(name, np.asarray(s, np.float32),
                       np.asarray(t, np.float32), **kwargs)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name,kwargs", ALL)
def test_gradient_matches_finite_differences(name, kwargs):
  """Analytic student gradient against central differences of the float64
  NumPy reference."""
  rng = np.random.default_rng(5)
  s = rng.normal(size=(V,)).astype(np.float32)
  t = rng.normal(size=(V,)).astype(np.float32)
  grad = jax.grad(lambda x: losses.divergence(name, x, t, **kwargs))(s)
  eps = 1e-5
  numeric = np.zeros(V)
  for i in range(V):
    up, down = s.astype(np.float64), s.astype(np.float64)
    up[i] += eps
    down[i] -= eps
    numeric[i] = (np_divergence(name, up, t, **kwargs)
                  - np_divergence(name, down, t, **kwargs)) / (2 * eps)
  np.testing.assert_allclose(grad, numeric, rtol=1e-3, atol=1e-5)


def test_bad_arguments_raise_clear_errors(logits):
  s, t = logits
  with pytest.raises(ValueError, match=r"beta=1\.5.*\[0, 1\]"):
    losses.generalized_jsd(s, t, beta=1.5)
  with pytest.raises(ValueError, match=r"skew=-0\.1"):
    losses.skew_forward_kl(s, t, skew=-0.1)
  with pytest.raises(ValueError, match=r"student_temperature=0"):
    losses.forward_kl(s, t, student_temperature=0)
  with pytest.raises(ValueError, match=r"teacher_temperature=-1"):
    losses.reverse_kl(s, t, teacher_temperature=-1)
  with pytest.raises(ValueError, match=r"'kl'.*'forward_kl'"):
    losses.divergence("kl", s, t)
  with pytest.raises(ValueError, match=r"does not take \['skew'\]"):
    losses.divergence("forward_kl", s, t, skew=0.1)
  with pytest.raises(ValueError, match=r"needs beta"):
    losses.divergence("jsd", s, t)


def test_sampled_kl_estimators():
  rng = np.random.default_rng(6)
  lq = np.log(rng.uniform(0.01, 1, size=(3, 5))).astype(np.float32)
  lp = np.log(rng.uniform(0.01, 1, size=(3, 5))).astype(np.float32)
  log_r = lp.astype(np.float64) - lq
  np.testing.assert_allclose(losses.sampled_kl(lq, lp), -log_r, rtol=1e-6)
  np.testing.assert_allclose(losses.sampled_kl(lq, lp, estimator="k2"),
                             0.5 * log_r**2, rtol=1e-5)
  np.testing.assert_allclose(losses.sampled_kl(lq, lp, estimator="k3"),
                             np.exp(log_r) - 1 - log_r, rtol=1e-5, atol=1e-7)
  with pytest.raises(ValueError, match="estimator='k4'"):
    losses.sampled_kl(lq, lp, estimator="k4")


def test_sampled_kl_is_unbiased_for_reverse_kl():
  """Monte Carlo mean of k1 and k3 over tokens drawn from Q equals the
  analytic KL(Q || P)."""
  rng = np.random.default_rng(7)
  s = rng.normal(size=(V,)).astype(np.float32)
  t = rng.normal(size=(V,)).astype(np.float32)
  lq, lp = jax.nn.log_softmax(s), jax.nn.log_softmax(t)
  a = jax.random.categorical(jax.random.key(0), s, shape=(200_000,))
  exact = float(losses.reverse_kl(s, t))
  for estimator in ("k1", "k3"):
    mc = float(jnp.mean(losses.sampled_kl(lq[a], lp[a], estimator=estimator)))
    # 200k samples: the standard error is well under 1% of KL here.
    assert abs(mc - exact) < 0.02 * exact + 1e-3, (estimator, mc, exact)


def _masked_pair():
  """Logits with -inf masks: tokens 0-1 masked on both sides, 2-3 by the
  student only, 9-10 by the teacher only."""
  rng = np.random.default_rng(6)
  s = rng.normal(size=(3, V)).astype(np.float32)
  t = rng.normal(size=(3, V)).astype(np.float32)
  s[:, :4] = -np.inf
  t[:, :2] = -np.inf
  t[:, 9:] = -np.inf
  return s, t


def _np_masked_softmax(logits):
  e = np.where(np.isneginf(logits), 0.0,
               np.exp(logits.astype(np.float64) - logits.max(-1,
                                                             keepdims=True)))
  return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize("name,kwargs", ALL)
def test_minus_inf_logits_masked_on_both_sides(name, kwargs):
  """-inf on the same tokens of both sides: the values equal those of the
  unmasked tokens alone, and every gradient is finite (zero at the masks)."""
  s, t = _masked_pair()
  t[:, :4] = -np.inf  # now both sides mask 0-3 ...
  t[:, 9:] = np.float32(0.3)
  s[:, 9:] = np.float32(-0.2)  # ... and nothing else
  value, (gs, gt) = _value_and_grad(name, kwargs, s, t)
  want = np_divergence(name, s[:, 4:], t[:, 4:], **kwargs).sum()
  np.testing.assert_allclose(value, want, rtol=1e-5, atol=1e-6)
  for g in (gs, gt):
    assert np.all(np.isfinite(g))
    np.testing.assert_array_equal(np.asarray(g)[:, :4], 0.0)


@pytest.mark.parametrize("name,kwargs", [
    c for c in ALL if c[0] not in ("forward_kl", "reverse_kl")
    and not (c[0] == "jsd" and c[1]["beta"] in (0.0, 1.0))
    and not (c[0].startswith("skew") and c[1]["skew"] in (0.0, 1.0))])
def test_minus_inf_one_sided_masks_stay_finite_for_mixtures(name, kwargs):
  """JSD, the skew KLs and TVD compare with a mixture that has mass
  wherever either side has: one-sided -inf masks give the exact finite
  value (0 log 0 = 0) and finite gradients."""
  s, t = _masked_pair()
  value, (gs, gt) = _value_and_grad(name, kwargs, s, t)
  q, p = _np_masked_softmax(s), _np_masked_softmax(t)
  if name == "tvd":
    want = 0.5 * np.abs(p - q).sum()
  elif name == "skew_forward_kl":
    want = np_kl(p, kwargs["skew"] * p + (1 - kwargs["skew"]) * q).sum()
  elif name == "skew_reverse_kl":
    want = np_kl(q, (1 - kwargs["skew"]) * p + kwargs["skew"] * q).sum()
  else:
    b = kwargs["beta"]
    m = b * p + (1 - b) * q
    want = (b * np_kl(p, m) + (1 - b) * np_kl(q, m)).sum()
    if kwargs.get("normalized"):
      want /= b * (1 - b)
  np.testing.assert_allclose(value, want, rtol=1e-5)
  assert np.all(np.isfinite(gs)) and np.all(np.isfinite(gt))


def test_minus_inf_kls_are_zero_or_infinite_as_the_maths_says():
  s, t = _masked_pair()
  q, p = _np_masked_softmax(s), _np_masked_softmax(t)
  # Forward KL only where the teacher has mass: the teacher's own masks
  # (9-10) add 0, but it puts mass on 2-3 where the student has none: +inf.
  assert np.all(np.isposinf(losses.forward_kl(s, t)))
  # Without the student-only masks forward KL is finite and exact.
  s2 = s.copy()
  s2[:, 2:4] = 0.5
  np.testing.assert_allclose(losses.forward_kl(s2, t),
                             np_kl(p, _np_masked_softmax(s2)), rtol=1e-5)
  # Reverse KL: the student puts mass on 9-10, masked by the teacher: +inf.
  assert np.all(np.isposinf(losses.reverse_kl(s, t)))
  t2 = t.copy()
  t2[:, 9:] = 0.1
  np.testing.assert_allclose(losses.reverse_kl(s, t2),
                             np_kl(q, _np_masked_softmax(t2)), rtol=1e-5)


@pytest.mark.parametrize("temperature", [float("inf"), float("nan"), 1e-30,
                                         1e-4, 1e4, 0.0, -1.0])
def test_temperatures_outside_the_range_are_refused(logits, temperature):
  s, t = logits
  for name in ("student_temperature", "teacher_temperature"):
    with pytest.raises(ValueError, match=rf"{name}=.*\[0\.001, 1000\]"):
      losses.forward_kl(s, t, **{name: temperature})
    with pytest.raises(ValueError, match=rf"{name}=.*\[0\.001, 1000\]"):
      losses.forward_kl(s, t, **{name: jnp.array(temperature)})


def _np_gradient(name, kwargs, s, t, st, tt, step=1e-6):
  """d divergence / d student logits by float64 central differences."""
  s, t = s.astype(np.float64), t.astype(np.float64)
  grad = np.zeros_like(s)
  for v in range(s.shape[-1]):
    shift = np.zeros_like(s)
    shift[..., v] = step
    grad[..., v] = (np_divergence(name, s + shift, t, st, tt, **kwargs)
                    - np_divergence(name, s - shift, t, st, tt, **kwargs)) / (2 * step)
  return grad


@pytest.mark.parametrize("name,kwargs", CASES)
@pytest.mark.parametrize("st,tt", [(1.0, 1.0), (0.7, 2.0)])
def test_divergence_and_gradient_match_float64_references(logits, name,
                                                          kwargs, st, tt):
  """Values and the per-position gradient with respect to the student's
  logits (closed form for forward KL and JSD, autodiff for the rest)
  against float64 NumPy values and central differences."""
  s, t = logits
  values, grad = losses.divergence_and_gradient(
      name, s, t, student_temperature=st, teacher_temperature=tt, **kwargs)
  assert grad.shape == s.shape and grad.dtype == jnp.float32
  np.testing.assert_allclose(
      values, np_divergence(name, s, t, st, tt, **kwargs), rtol=1e-5,
      atol=1e-6)
  np.testing.assert_allclose(grad, _np_gradient(name, kwargs, s, t, st, tt),
                             rtol=1e-4, atol=2e-6)


@pytest.mark.parametrize("name,kwargs", ALL + [("jsd", {"beta": 0.0})])
@pytest.mark.parametrize("mask", ["-inf", "-1e9"])
def test_divergence_and_gradient_agree_with_autodiff_under_masks(
    name, kwargs, mask):
  """With tokens masked on one side, the other or both, the gradient equals
  autodiff's through `divergence` (zero at tokens without student mass,
  never NaN) wherever the value is finite."""
  s, t = _masked_pair()
  if mask == "-1e9":
    s[np.isinf(s)], t[np.isinf(t)] = -1e9, -1e9
  values, grad = losses.divergence_and_gradient(name, s, t, **kwargs)
  want_values, (want_grad, _) = _value_and_grad(name, kwargs, s, t)
  np.testing.assert_allclose(np.sum(values), want_values, rtol=1e-6)
  if not np.isfinite(want_values):
    return  # KL to a teacher that masks what the student allows: inf
  assert np.all(np.isfinite(grad))
  np.testing.assert_allclose(grad, want_grad, rtol=1e-5, atol=1e-7)
  np.testing.assert_array_equal(np.asarray(grad)[:, :2], 0.0)


def test_divergence_and_gradient_takes_a_traced_beta():
  """A traced beta (no closed form here) gives autodiff's gradient, and
  bad settings are refused as by `divergence`."""
  s, t = _masked_pair()
  s, t = np.nan_to_num(s, neginf=-1e9), np.nan_to_num(t, neginf=-1e9)
  traced = jax.jit(lambda b: losses.divergence_and_gradient(
      "jsd", s, t, beta=b)[1])(0.3)
  static = losses.divergence_and_gradient("jsd", s, t, beta=0.3)[1]
  np.testing.assert_allclose(traced, static, rtol=1e-5, atol=1e-7)
  with pytest.raises(ValueError, match="beta"):
    losses.divergence_and_gradient("jsd", s, t, beta=1.5)
  with pytest.raises(ValueError, match="skew"):
    losses.divergence_and_gradient("jsd", s, t, beta=0.5, skew=0.1)
