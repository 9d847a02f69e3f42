"""REINFORCE and PPO terms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gkdrl import losses


def test_baselines_by_hand():
  r = jnp.array([1.0, 3.0, 0.0, 4.0])
  np.testing.assert_allclose(
      losses.sequence_advantages(r, baseline="none"), r)
  np.testing.assert_allclose(
      losses.sequence_advantages(r, baseline="mean"), r - 2.0)
  np.testing.assert_allclose(
      losses.sequence_advantages(r, baseline="mean", group_size=2),
      [-1.0, 1.0, -2.0, 2.0])
  # Leave-one-out over groups of two: each row's baseline is the other row.
  np.testing.assert_allclose(
      losses.sequence_advantages(r, baseline="rloo", group_size=2),
      [-2.0, 2.0, -4.0, 4.0])


def test_rloo_excludes_the_row_itself():
  rng = np.random.default_rng(0)
  r = rng.normal(size=12).astype(np.float32)
  adv = losses.sequence_advantages(jnp.asarray(r), baseline="rloo",
                                   group_size=4)
  for i in range(12):
    group = r[(i // 4) * 4:(i // 4) * 4 + 4]
    others = np.delete(group, i % 4)
    assert adv[i] == pytest.approx(r[i] - others.mean(), rel=1e-5)
  # Changing a row's reward leaves its own baseline unchanged.
  r2 = r.copy()
  r2[5] += 10.0
  adv2 = losses.sequence_advantages(jnp.asarray(r2), baseline="rloo",
                                    group_size=4)
  assert adv2[5] - adv[5] == pytest.approx(10.0, rel=1e-5)


def test_reinforce_gradient_matches_score_function():
  """On a tiny 2-step softmax policy, the loss gradient with reduction "sum"
  equals -mean_b A_b * grad log pi(y_b), computed independently."""
  rng = np.random.default_rng(1)
  b, t, v = 4, 3, 5
  theta = rng.normal(size=(t, v)).astype(np.float32)  # position logits
  actions = rng.integers(0, v, size=(b, t))
  mask = np.array([[1, 1, 1], [1, 1, 0], [1, 0, 0], [1, 1, 1]], bool)
  rewards = np.array([1.0, -0.5, 2.0, 0.3], np.float32)

  def loss_fn(th):
    log_probs = jax.nn.log_softmax(th)[None].repeat(b, 0)  # [B, T, V]
    logp_a = jnp.take_along_axis(log_probs, actions[..., None], -1)[..., 0]
    return losses.policy_gradient_loss(logp_a, rewards, mask,
                                       baseline="mean", reduction="sum")[0]

  got = jax.grad(loss_fn)(theta)
  # Independent score function: grad log softmax(th)[a] = onehot(a) - pi.
  pi = np.exp(theta - theta.max(-1, keepdims=True)).astype(np.float64)
  pi /= pi.sum(-1, keepdims=True)
  adv = rewards - rewards.mean()
  want = np.zeros((t, v))
  for i in range(b):
    for j in range(t):
      if mask[i, j]:
        want[j] -= adv[i] * (np.eye(v)[actions[i, j]] - pi[j])
  want /= b
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_sequence_reduction_normalises_by_length():
  logp_a = jnp.array([[-1.0, -2.0, -3.0], [-1.0, 0.0, 0.0]])
  mask = jnp.array([[1, 1, 1], [1, 0, 0]])
  rewards = jnp.array([1.0, 0.0])
  loss, metrics = losses.policy_gradient_loss(logp_a, rewards, mask,
                                              baseline="none")
  # Row 0: -1 * mean(-1, -2, -3) = 2; row 1: 0.
  assert float(loss) == pytest.approx(1.0)
  assert float(metrics["reward/mean"]) == pytest.approx(0.5)
  assert float(metrics["loss/pg"]) == float(loss)


def test_no_gradient_flows_into_rewards():
  logp_a = jnp.full((2, 3), -1.0)
  mask = jnp.ones((2, 3))
  g = jax.grad(lambda r: losses.policy_gradient_loss(logp_a, r, mask)[0])(
      jnp.array([1.0, 2.0]))
  np.testing.assert_array_equal(g, 0.0)


def test_ppo_clip_by_hand():
  old = jnp.zeros((1, 4))
  logp = jnp.log(jnp.array([[1.0, 1.5, 0.5, 1.1]]))
  mask = jnp.ones((1, 4))
  adv = jnp.array([1.0])
  loss, metrics = losses.ppo_clip_loss(logp, old, adv, mask, epsilon=0.2,
                                       reduction="token")
  # min(r A, clip(r) A) with A = 1: 1, 1.2, 0.5, 1.1.
  assert float(loss) == pytest.approx(-(1 + 1.2 + 0.5 + 1.1) / 4, rel=1e-5)
  assert float(metrics["ppo/clip_fraction"]) == pytest.approx(0.5)
  grad = jax.grad(lambda l: losses.ppo_clip_loss(
      l, old, adv, mask, reduction="token")[0])(logp)
  # Clipped above with A > 0 -> no gradient; 0.5 is below the clip but the
  # min keeps the unclipped term, so it still gets a gradient.
  assert float(grad[0, 1]) == 0.0
  assert float(grad[0, 2]) == pytest.approx(-0.5 / 4, rel=1e-5)


def test_ppo_first_epoch_equals_reinforce_gradient():
  rng = np.random.default_rng(2)
  logp = jnp.asarray(np.log(rng.uniform(0.1, 1, (3, 4))), jnp.float32)
  mask = jnp.asarray(rng.uniform(size=(3, 4)) < 0.8)
  rewards = jnp.array([1.0, 0.0, 2.0])
  adv = losses.sequence_advantages(rewards)
  g_ppo = jax.grad(lambda l: losses.ppo_clip_loss(l, l, adv, mask)[0])(logp)
  g_pg = jax.grad(lambda l: losses.policy_gradient_loss(
      l, rewards, mask)[0])(logp)
  np.testing.assert_allclose(g_ppo, g_pg, rtol=1e-5, atol=1e-7)


def test_bad_arguments():
  r = jnp.ones(4)
  with pytest.raises(ValueError, match="baseline='median'"):
    losses.sequence_advantages(r, baseline="median")
  with pytest.raises(ValueError, match="group_size=3 must divide"):
    losses.sequence_advantages(r, group_size=3)
  with pytest.raises(ValueError, match="rloo.*group_size >= 2"):
    losses.sequence_advantages(r, baseline="rloo")
  with pytest.raises(ValueError, match="epsilon=0"):
    losses.ppo_clip_loss(jnp.zeros((1, 2)), jnp.zeros((1, 2)), r[:1],
                         jnp.ones((1, 2)), epsilon=0)
