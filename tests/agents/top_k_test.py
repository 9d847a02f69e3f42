"""The agents' teacher_top_k option: exact at k = V, lower below it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gkdrl import agents
from tests.agents.agents_test import make


def _update(name, models, task, task_batch, **kwargs):
  _, sp, _, tp = models
  agent = make(name, models, task, **kwargs)
  state = agent.init(sp)
  batch, _ = agent.act(state, task_batch, jax.random.key(0),
                       teacher_params=tp, reward_params=())
  return agent.update(state, batch, tp, jax.random.key(1))


@pytest.mark.parametrize("name,kwargs", [
    ("supervised_kd", {}),
    ("gkd", {"lmbda": 0.0, "divergence": "jsd", "teacher_temperature": 0.5}),
    ("gkd_rl", {"alpha": 0.5, "samples_per_prompt": 2}),
])
def test_top_k_equals_full_at_k_equal_v_and_is_lower_below(
    name, kwargs, tiny_models, facts_task, fixed_batch):
  vocab = tiny_models[0].config.vocab_size
  full_state, full = _update(name, tiny_models, facts_task, fixed_batch,
                             **kwargs)
  exact_state, exact = _update(name, tiny_models, facts_task, fixed_batch,
                               teacher_top_k=vocab, **kwargs)
  for key in ("loss/total", "loss/divergence", "kl/teacher",
              "train/grad_norm"):
    np.testing.assert_allclose(exact[key], full[key], rtol=1e-5, atol=1e-6,
                               err_msg=key)
  for a, b in zip(jax.tree.leaves(exact_state.params),
                  jax.tree.leaves(full_state.params)):
    # Adam's first step is about lr * sign(gradient): a gradient entry near
    # 0 may move by a fraction of lr = 3e-2 on float rounding alone.
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=3e-4)
  _, coarse = _update(name, tiny_models, facts_task, fixed_batch,
                      teacher_top_k=3, **kwargs)
  assert np.isfinite(float(coarse["loss/total"]))
  # Data-processing inequality: the bucketed divergence is lower.
  assert float(coarse["loss/divergence"]) < float(full["loss/divergence"])


def test_gkd_rl_top_k_with_a_traced_alpha_equals_fixed_alphas(
    tiny_models, facts_task, fixed_batch):
  student, sp, teacher, tp = tiny_models
  agent = make("gkd_rl", tiny_models, facts_task, alpha=0.5,
               samples_per_prompt=2, teacher_top_k=5)
  state = agent.init(sp)
  batch, _ = agent.act(state, fixed_batch, jax.random.key(0),
                       teacher_params=tp, reward_params=())
  loss = agents.make_gkd_rl_loss(agent.config, student, teacher)

  def value_and_grad(alpha):
    fn = lambda p: loss(p, state, batch, tp, None, alpha=alpha)
    return jax.value_and_grad(fn, has_aux=True)(state.params)

  alphas = (0.0, 0.5, 1.0)
  traced = jax.jit(jax.vmap(value_and_grad))(jnp.asarray(alphas))
  for i, alpha in enumerate(alphas):
    (loss_f, _), grads_f = jax.jit(value_and_grad, static_argnums=0)(alpha)
    (loss_t, _), grads_t = jax.tree.map(lambda x, i=i: x[i], traced)
    np.testing.assert_allclose(loss_t, loss_f, rtol=1e-5, atol=1e-7)
    for a, b in zip(jax.tree.leaves(grads_t), jax.tree.leaves(grads_f)):
      assert np.all(np.isfinite(a))
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_top_k_settings():
  assert agents.GKDConfig(teacher_top_k=64).chunk_size(151_936) == 0
  with pytest.raises(ValueError, match="loss_chunk_size=8 is not allowed"):
    agents.GKDConfig(teacher_top_k=64, loss_chunk_size=8)
  with pytest.raises(ValueError, match="teacher_top_k=-1 is not allowed"):
    agents.SupervisedKDConfig(teacher_top_k=-1)
  assert "teacher_top_k" in agents.GKDRLConfig(
      kl_mode="sampled").unread_settings()
  assert "teacher_top_k" not in agents.GKDRLConfig().unread_settings()
