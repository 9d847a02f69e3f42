"""gkd_rl's alpha_schedule: linear values, the adaptive controller, resume."""

import jax
import numpy as np
import pytest

from gkdrl import agents
from gkdrl.agents import alpha_schedule
from gkdrl.runners import checkpointing
from tests.agents.agents_test import make


def test_linear_values_follow_the_formula():
  for step, want in ((0, 0.2), (5, 0.2 + 0.6 * 0.5), (10, 0.8), (15, 0.8)):
    got = alpha_schedule.linear_alpha(0.2, 0.8, 10, step)
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_adaptive_moves_alpha_towards_the_target_and_stays_in_range():
  up = alpha_schedule.adaptive_alpha(0.5, 0.3, target=0.1, gain=0.5)
  down = alpha_schedule.adaptive_alpha(0.5, 0.01, target=0.1, gain=0.5)
  np.testing.assert_allclose(up, 0.5 * (1 + 0.5 * 0.2), rtol=1e-6)
  np.testing.assert_allclose(down, 0.5 * (1 - 0.5 * 0.2), rtol=1e-6)
  assert float(alpha_schedule.adaptive_alpha(1.0, 9.0, target=0.1,
                                             gain=5.0)) == 1.0
  np.testing.assert_allclose(alpha_schedule.adaptive_alpha(
      1e-3, 0.0, target=0.1, gain=5.0), alpha_schedule.ADAPTIVE_FLOOR,
                             rtol=1e-6)


def _run(config_kwargs, models, task, task_batch, steps):
  _, sp, _, tp = models
  agent = make("gkd_rl", models, task, samples_per_prompt=2, **config_kwargs)
  assert agent.uses_teacher and agent.uses_reward
  state, logged = agent.init(sp), []
  for i in range(steps):
    batch, _ = agent.act(state, task_batch, jax.random.key(i),
                         teacher_params=tp, reward_params=())
    state, metrics = agent.update(state, batch, tp, jax.random.key(i))
    logged.append((float(metrics["train/alpha"]),
                   float(metrics["kl/teacher"])))
  return state, logged


def test_linear_schedule_in_the_agent(tiny_models, facts_task, fixed_batch):
  state, logged = _run(dict(alpha=0.0, alpha_schedule="linear",
                            alpha_end=1.0, alpha_steps=4),
                       tiny_models, facts_task, fixed_batch, 3)
  np.testing.assert_allclose([a for a, _ in logged], [0.0, 0.25, 0.5],
                             atol=1e-6)
  np.testing.assert_allclose(state.alpha, 0.75, atol=1e-6)


@pytest.mark.parametrize("target_scale,direction", [(0.3, 1), (3.0, -1)])
def test_adaptive_alpha_moves_to_correct_the_teacher_kl(
    target_scale, direction, tiny_models, facts_task, fixed_batch):
  # The untrained student's KL to the teacher, measured once.
  _, probe = _run(dict(alpha=0.5), tiny_models, facts_task, fixed_batch, 1)
  target = probe[0][1] * target_scale
  state, logged = _run(dict(alpha=0.5, alpha_schedule="adaptive",
                            target_teacher_kl=target, alpha_gain=1.0),
                       tiny_models, facts_task, fixed_batch, 6)
  # Each step is the controller's: KL above the target raises alpha, below
  # it lowers it, up to the bounds.
  alphas = [a for a, _ in logged] + [float(state.alpha)]
  for (alpha, kl), new in zip(logged, alphas[1:]):
    want = alpha_schedule.adaptive_alpha(alpha, kl, target=target, gain=1.0)
    np.testing.assert_allclose(new, want, rtol=1e-6)
    assert new == alpha or np.sign(new - alpha) == np.sign(kl - target)
  assert np.sign(alphas[-1] - 0.5) == direction, (logged, target)


# The bound on the KL trajectory was set against XLA's optimised programs.
@pytest.mark.xla_optimized
def test_adaptive_alpha_holds_the_teacher_kl_near_the_target(
    tiny_models, facts_task, fixed_batch):
  """The facts task, the tiny models and a length reward, 60 updates at
  learning rate 3e-2; the teacher KL over steps 20 to 59, as measured on
  an AMD EPYC CPU: a fixed alpha of 0.99 holds it at 0.0036 (mean), 0.01
  lets it drift to a mean of 0.47 (0.29 to 0.68, still rising); the
  adaptive schedule with target 0.1 keeps it between 0.078 and 0.215, mean
  0.136 (the KL lags alpha by several updates, so the proportional
  controller overshoots). XLA's rounding differs between CPUs, and the
  trajectory with it: on an Intel Xeon the adaptive run peaked at 0.349
  before settling near 0.22. The bounds below (mean within a factor 2 of
  the target, no step above 5 times it) pass both runs and fail both fixed
  alphas."""
  target = 0.1
  _, logged = _run(dict(alpha=0.5, alpha_schedule="adaptive",
                        target_teacher_kl=target, alpha_gain=1.0),
                   tiny_models, facts_task, fixed_batch, 60)
  kls = np.asarray([kl for _, kl in logged[20:]])
  assert 0.5 * target < kls.mean() < 2 * target, kls
  assert kls.max() < 5 * target, kls
  alphas = np.asarray([alpha for alpha, _ in logged[20:]])
  assert alphas.min() < 0.1 and alphas.max() > 0.2, alphas  # it acted


def test_resume_restores_alpha(tiny_models, facts_task, fixed_batch,
                               tmp_path):
  kwargs = dict(alpha=0.5, alpha_schedule="adaptive", target_teacher_kl=1e-3)
  state, _ = _run(kwargs, tiny_models, facts_task, fixed_batch, 2)
  alpha = float(state.alpha)
  checkpointer = checkpointing.Checkpointer(tmp_path)
  checkpointer.save(2, state)
  checkpointer.close()
  fresh = make("gkd_rl", tiny_models, facts_task, samples_per_prompt=2,
               **kwargs).init(tiny_models[1])
  restored = checkpointing.Checkpointer(tmp_path).restore(fresh, 2)
  assert float(fresh.alpha) == 0.5
  assert float(restored.alpha) == alpha != 0.5


def test_schedule_settings():
  with pytest.raises(ValueError, match="alpha_schedule='cosine'"):
    agents.GKDRLConfig(alpha_schedule="cosine")
  unread = agents.GKDRLConfig(alpha_schedule="linear").unread_settings()
  assert "target_teacher_kl" in unread and "alpha_end" not in unread
  unread = agents.GKDRLConfig().unread_settings()
  assert "alpha_end" in unread and "alpha_gain" in unread
