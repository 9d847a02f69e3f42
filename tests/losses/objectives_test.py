"""distillation_loss and gkd_rl_loss (paper Eq. 2 and Eq. 5)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gkdrl import losses

B, T, V = 4, 5, 9


@pytest.fixture(scope="module")
def batch():
  rng = np.random.default_rng(0)
  student = jnp.asarray(rng.normal(size=(B, T, V)), jnp.float32)
  teacher = jnp.asarray(rng.normal(size=(B, T, V)), jnp.float32)
  ref = jnp.asarray(rng.normal(size=(B, T, V)), jnp.float32)
  actions = jnp.asarray(rng.integers(0, V, size=(B, T)), jnp.int32)
  mask = jnp.asarray([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0],
                      [1, 1, 1, 1, 0]], bool)
  rewards = jnp.asarray([0.5, -1.0, 2.0, 0.1], jnp.float32)
  return dict(student=student, teacher=teacher, ref=ref, actions=actions,
              mask=mask, rewards=rewards)


def _loss(batch, student=None, teacher="default", rewards="default", **kw):
  student = batch["student"] if student is None else student
  teacher = batch["teacher"] if teacher == "default" else teacher
  rewards = batch["rewards"] if rewards == "default" else rewards
  return losses.gkd_rl_loss(student, teacher, batch["actions"],
                            batch["mask"], rewards, **kw)


def test_distillation_loss_is_sequence_mean_of_divergence(batch):
  loss, metrics = losses.distillation_loss(
      batch["student"], batch["teacher"], batch["mask"],
      divergence="forward_kl")
  values = np.asarray(losses.forward_kl(batch["student"], batch["teacher"]))
  mask = np.asarray(batch["mask"])
  want = np.mean([values[b][mask[b]].mean() for b in range(B)])
  assert float(loss) == pytest.approx(want, rel=1e-5)
  assert float(metrics["loss/divergence"]) == float(loss)
  rkl = np.asarray(losses.reverse_kl(batch["student"], batch["teacher"]))
  assert float(metrics["kl/teacher"]) == pytest.approx(
      np.mean([rkl[b][mask[b]].mean() for b in range(B)]), rel=1e-5)


def test_distillation_loss_gives_no_teacher_gradient(batch):
  g = jax.grad(lambda t: losses.distillation_loss(
      batch["student"], t, batch["mask"])[0])(batch["teacher"])
  np.testing.assert_array_equal(g, 0.0)


def test_alpha_mixes_pg_and_divergence(batch):
  pg, pg_metrics = losses.policy_gradient_loss(
      jnp.take_along_axis(jax.nn.log_softmax(batch["student"]),
                          batch["actions"][..., None], -1)[..., 0],
      batch["rewards"], batch["mask"])
  div, _ = losses.distillation_loss(batch["student"], batch["teacher"],
                                    batch["mask"], beta=0.9)
  loss, metrics = _loss(batch, alpha=0.25)
  assert float(loss) == pytest.approx(0.75 * float(pg) + 0.25 * float(div),
                                     rel=1e-5)
  assert float(metrics["loss/pg"]) == pytest.approx(float(pg), rel=1e-5)
  assert float(metrics["loss/divergence"]) == pytest.approx(float(div),
                                                           rel=1e-5)
  assert float(metrics["reward/mean"]) == pytest.approx(
      float(pg_metrics["reward/mean"]))
  for key in ("loss/total", "loss/pg", "loss/divergence", "reward/mean",
              "kl/teacher"):
    assert key in metrics


@pytest.mark.parametrize("kl_mode", losses.KL_MODES)
def test_loss_and_gradient_linear_in_alpha(batch, kl_mode):
  def value_and_grad(alpha):
    return jax.value_and_grad(lambda s: _loss(
        batch, student=s, alpha=alpha, kl_mode=kl_mode)[0])(batch["student"])

  (l0, g0), (l1, g1), (lh, gh) = (value_and_grad(a) for a in (0.0, 1.0, 0.3))
  assert float(lh) == pytest.approx(0.7 * float(l0) + 0.3 * float(l1),
                                    rel=1e-5, abs=1e-6)
  np.testing.assert_allclose(gh, 0.7 * g0 + 0.3 * g1, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("kl_mode", losses.KL_MODES)
@pytest.mark.parametrize("traced", [False, True])
def test_alpha_one_ignores_rewards(batch, kl_mode, traced):
  alpha = jnp.float32(1.0) if traced else 1.0

  def value_and_grad(rewards):
    return jax.value_and_grad(lambda s: _loss(
        batch, student=s, rewards=rewards, alpha=alpha,
        kl_mode=kl_mode)[0])(batch["student"])

  l_a, g_a = value_and_grad(batch["rewards"])
  l_b, g_b = value_and_grad(jnp.asarray([1e6, np.nan, -3.0, np.inf]))
  assert float(l_a) == float(l_b)
  np.testing.assert_array_equal(g_a, g_b)
  if not traced:
    l_c, g_c = value_and_grad(None)
    assert float(l_c) == float(l_a)
    np.testing.assert_array_equal(g_c, g_a)


@pytest.mark.parametrize("kl_mode", losses.KL_MODES)
@pytest.mark.parametrize("traced", [False, True])
def test_alpha_zero_ignores_teacher(batch, kl_mode, traced):
  alpha = jnp.float32(0.0) if traced else 0.0

  def value_and_grad(teacher):
    return jax.value_and_grad(lambda s: _loss(
        batch, student=s, teacher=teacher, alpha=alpha,
        kl_mode=kl_mode)[0])(batch["student"])

  weird = batch["teacher"].at[0, 0, 0].set(jnp.nan) * 100
  l_a, g_a = value_and_grad(batch["teacher"])
  l_b, g_b = value_and_grad(weird)
  assert float(l_a) == float(l_b)
  np.testing.assert_array_equal(g_a, g_b)
  assert np.all(np.isfinite(g_a))
  if not traced:
    l_c, g_c = value_and_grad(None)
    assert float(l_c) == float(l_a)
    np.testing.assert_array_equal(g_c, g_a)
    _, metrics = _loss(batch, teacher=None, alpha=0.0, kl_mode=kl_mode)
    assert "kl/teacher" not in metrics


def test_alpha_can_be_vmapped(batch):
  alphas = jnp.array([0.0, 0.05, 0.5, 1.0])
  fn = lambda a: _loss(batch, alpha=a)[0]
  got = jax.jit(jax.vmap(fn))(alphas)
  want = [float(_loss(batch, alpha=float(a))[0]) for a in alphas]
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_sampled_mode_gradient_is_the_per_token_advantage(batch):
  """kl_mode="sampled" at alpha = 1: the gradient is REINFORCE with a
  per-token reward -(log q(a_t) - log p(a_t))."""
  def manual(s):
    logp_a = jnp.take_along_axis(jax.nn.log_softmax(s),
                                 batch["actions"][..., None], -1)[..., 0]
    tlogp_a = jnp.take_along_axis(jax.nn.log_softmax(batch["teacher"]),
                                  batch["actions"][..., None], -1)[..., 0]
    adv = -jax.lax.stop_gradient(logp_a - tlogp_a)
    return losses.masked_mean(-adv * logp_a, batch["mask"])

  got = jax.grad(lambda s: _loss(batch, student=s, rewards=None, alpha=1.0,
                                 kl_mode="sampled")[0])(batch["student"])
  np.testing.assert_allclose(got, jax.grad(manual)(batch["student"]),
                             rtol=1e-5, atol=1e-7)


def test_reference_kl_term(batch):
  base, _ = _loss(batch, alpha=0.5)
  with_ref, metrics = _loss(batch, alpha=0.5, ref_logits=batch["ref"],
                            ref_kl_coef=0.1)
  ref_kl = losses.masked_mean(
      losses.reverse_kl(batch["student"], batch["ref"]), batch["mask"])
  assert float(metrics["kl/reference"]) == pytest.approx(float(ref_kl),
                                                         rel=1e-5)
  assert float(with_ref) == pytest.approx(float(base) + 0.1 * float(ref_kl),
                                          rel=1e-5)


def test_divergence_options_reach_the_divergence(batch):
  skew, _ = _loss(batch, rewards=None, alpha=1.0,
                  divergence="skew_reverse_kl", skew=0.3)
  want = losses.masked_mean(losses.skew_reverse_kl(
      batch["student"], batch["teacher"], skew=0.3), batch["mask"])
  assert float(skew) == pytest.approx(float(want), rel=1e-5)
  hot, _ = _loss(batch, rewards=None, alpha=1.0, divergence="forward_kl",
                 teacher_temperature=0.1)
  want = losses.masked_mean(losses.forward_kl(
      batch["student"], batch["teacher"], teacher_temperature=0.1),
                            batch["mask"])
  assert float(hot) == pytest.approx(float(want), rel=1e-5)


def test_bad_arguments(batch):
  with pytest.raises(ValueError, match=r"alpha=1\.2.*\[0, 1\]"):
    _loss(batch, alpha=1.2)
  with pytest.raises(ValueError, match=r"beta=-0\.5"):
    _loss(batch, alpha=0.5, beta=-0.5)
  with pytest.raises(ValueError, match="kl_mode='exact'"):
    _loss(batch, alpha=0.5, kl_mode="exact")
  with pytest.raises(ValueError, match="divergence='l2'"):
    _loss(batch, alpha=0.5, divergence="l2")
  with pytest.raises(ValueError, match="rewards is None"):
    _loss(batch, rewards=None, alpha=0.5)
  with pytest.raises(ValueError, match="teacher_logits is None"):
    _loss(batch, teacher=None, alpha=0.5)
  with pytest.raises(ValueError, match="ref_kl_coef=-1"):
    _loss(batch, alpha=0.5, ref_logits=batch["ref"], ref_kl_coef=-1)


@pytest.mark.parametrize("alpha", [0.3, "traced"])
def test_gkd_rl_row_chunks_match_the_plain_divergence(batch, alpha):
  def value_and_grad(chunk_size, alpha):
    fn = lambda s: _loss(batch, student=s, alpha=alpha, divergence="jsd",
                         chunk_size=chunk_size)
    return jax.value_and_grad(fn, has_aux=True)(batch["student"])

  if alpha == "traced":  # one alpha per vmapped member, as the sweep does
    alphas = jnp.asarray([0.0, 0.3, 1.0], jnp.float32)
    plain, chunked = (jax.vmap(lambda a, c=c: value_and_grad(c, a))(alphas)
                      for c in (0, 3))
  else:
    plain, chunked = value_and_grad(0, alpha), value_and_grad(3, alpha)
  (loss0, metrics0), grad0 = plain
  (loss1, metrics1), grad1 = chunked
  assert np.abs(np.asarray(grad0)).max() > 0
  np.testing.assert_allclose(loss1, loss0, rtol=1e-6)
  for key in ("loss/divergence", "kl/teacher", "loss/pg"):
    np.testing.assert_allclose(metrics1[key], metrics0[key], rtol=1e-6,
                               atol=1e-7, err_msg=key)
  np.testing.assert_allclose(grad1, grad0, rtol=1e-5, atol=1e-7)


def test_gkd_rl_rejects_a_negative_chunk_size(batch):
  with pytest.raises(ValueError, match="chunk_size=-1 is not allowed"):
    _loss(batch, alpha=0.5, chunk_size=-1)


def _minus_inf_batch(batch):
  """The batch's logits with tokens 0-2 masked by -inf on both sides."""
  student = batch["student"].at[..., :3].set(-jnp.inf)
  teacher = batch["teacher"].at[..., :3].set(-jnp.inf)
  return student, teacher


@pytest.mark.parametrize("chunk_size", [0, 3])  # plain and row-chunk paths
@pytest.mark.parametrize("divergence,kwargs", [
    ("jsd", {"beta": 0.5}), ("forward_kl", {}), ("reverse_kl", {}),
    ("skew_forward_kl", {"skew": 0.1}), ("tvd", {})])
def test_distillation_loss_supports_minus_inf_masks(batch, chunk_size,
                                                    divergence, kwargs):
  student, teacher = _minus_inf_batch(batch)

  def loss_fn(s, logits):
    return losses.distillation_loss(s, logits, batch["mask"],
                                    divergence=divergence,
                                    chunk_size=chunk_size, **kwargs)[0]

  value, grad = jax.value_and_grad(loss_fn)(student, teacher)
  # The same loss over the six unmasked tokens alone.
  want = losses.distillation_loss(batch["student"][..., 3:],
                                  batch["teacher"][..., 3:], batch["mask"],
                                  divergence=divergence, chunk_size=0,
                                  **kwargs)[0]
  np.testing.assert_allclose(value, want, rtol=1e-5)
  assert np.all(np.isfinite(grad))
  np.testing.assert_array_equal(np.asarray(grad)[..., :3], 0.0)
  _, metrics = losses.distillation_loss(student, teacher, batch["mask"],
                                        divergence=divergence,
                                        chunk_size=chunk_size, **kwargs)
  assert np.isfinite(metrics["kl/teacher"])


@pytest.mark.parametrize("kwargs,match", [
    (dict(alpha=jnp.array(1.5)), r"alpha=Array\(1\.5"),
    (dict(alpha=0.5, beta=jnp.array(2.0)), r"beta=Array\(2\."),
    (dict(alpha=np.float32(-0.1)), r"alpha=.*-0\.1"),
    (dict(alpha=0.5, divergence="skew_forward_kl", skew=jnp.array(1.5)),
     r"skew=Array\(1\.5"),
    (dict(alpha=0.5, teacher_temperature=jnp.array(1e-30)),
     r"teacher_temperature=Array"),
    (dict(alpha=0.5, student_temperature=float("inf")),
     r"student_temperature=inf"),
])
def test_gkd_rl_loss_checks_concrete_arrays(batch, kwargs, match):
  with pytest.raises(ValueError, match=match):
    _loss(batch, **kwargs)


@pytest.mark.parametrize("name", ["student_temperature",
                                  "teacher_temperature"])
@pytest.mark.parametrize("value", [float("inf"), 1e-30])
def test_gkd_rl_sampled_mode_checks_temperatures(batch, name, value):
  with pytest.raises(ValueError, match=rf"{name}=.*\[0\.001, 1000\]"):
    _loss(batch, alpha=0.5, kl_mode="sampled", **{name: value})


@pytest.mark.parametrize("chunk_size", [0, 3])
@pytest.mark.parametrize("kwargs,match", [
    (dict(divergence="jsd", beta=jnp.array(2.0)), r"beta=Array\(2\."),
    (dict(divergence="skew_reverse_kl", skew=jnp.array(-1.0)), r"skew="),
    (dict(divergence="jsd", teacher_temperature=jnp.array(float("inf"))),
     r"teacher_temperature="),
    (dict(divergence="forward_kl", student_temperature=1e-30),
     r"student_temperature=1e-30"),
])
def test_distillation_entry_points_check_concrete_arrays(batch, chunk_size,
                                                         kwargs, match):
  with pytest.raises(ValueError, match=match):
    losses.distillation_loss(batch["student"], batch["teacher"],
                             batch["mask"], chunk_size=chunk_size, **kwargs)
  hidden = batch["student"][..., :4]
  unembedding = jnp.ones((4, V), jnp.float32)
  with pytest.raises(ValueError, match=match):
    losses.chunked_distillation_loss(hidden, unembedding, hidden,
                                     unembedding, batch["mask"], chunk_size=2,
                                     **kwargs)
