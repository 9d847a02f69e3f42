"""Every agent: two updates, a decreasing loss, its branches, its errors."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gkdrl import agents
from gkdrl import reward_models
from gkdrl.losses import chunked
from gkdrl.losses import row_chunks

MAX_NEW = 8
LEARNING_RATE = 3e-2


class CountingReward:
  """A host reward that counts its calls (length of the completion)."""

  def __init__(self):
    self.calls = 0

  def model(self):
    def fn(sources, completions, targets):
      del sources, targets
      self.calls += 1
      return np.array([len(c.split()) / 10 for c in completions], np.float32)
    return reward_models.make_python_reward(fn, name="length")


def make(name, models, task, reward=None, **kwargs):
  student, _, teacher, _ = models
  config = agents.make_config(
      name, max_new_tokens=MAX_NEW,
      optimizer=agents.OptimizerConfig(learning_rate=LEARNING_RATE,
                                       warmup_steps=0),
      **kwargs)
  return agents.make_agent(config, student=student, teacher=teacher,
                           tokenizer=task.tokenizer,
                           reward=reward or CountingReward().model())


AGENT_KWARGS = {
    "sft": {},
    "seqkd": {"sample_temperature": 0.0},
    "supervised_kd": {},
    "gkd": {"lmbda": 1.0, "divergence": "reverse_kl"},
    "rl": {"samples_per_prompt": 2, "baseline": "rloo"},
    "gkd_rl": {"alpha": 0.5},
}


@pytest.mark.parametrize("name", sorted(AGENT_KWARGS))
def test_loss_decreases_on_a_fixed_batch(name, tiny_models, facts_task,
                                         fixed_batch):
  agent = make(name, tiny_models, facts_task, **AGENT_KWARGS[name])
  _, sp, _, tp = tiny_models
  state = agent.init(sp)
  batch, info = agent.act(state, fixed_batch, jax.random.key(0),
                          teacher_params=tp, reward_params=())
  assert info["rollout/length"] > 0
  losses = []
  for i in range(6):
    state, metrics = agent.update(state, batch, tp, jax.random.key(i))
    losses.append(float(metrics["loss/total"]))
    assert float(metrics["train/skipped"]) == 0.0
  assert int(state.step) == 6
  assert all(np.isfinite(losses))
  # On a fixed batch every loss, REINFORCE's surrogate included, is a
  # deterministic function of the parameters that gradient steps lower.
  assert losses[-1] < losses[0], losses


def test_gkd_lmbda_branches(tiny_models, facts_task, fixed_batch):
  _, sp, _, tp = tiny_models
  for lmbda, student_data in ((0.0, 0.0), (1.0, 1.0)):
    agent = make("gkd", tiny_models, facts_task, lmbda=lmbda)
    state = agent.init(sp)
    for seed in range(3):
      batch, info = agent.act(state, fixed_batch, jax.random.key(seed),
                              teacher_params=tp)
      assert info["rollout/student_data"] == student_data
      if lmbda == 0.0:
        np.testing.assert_array_equal(batch.completion_tokens,
                                      fixed_batch.target_tokens)
      else:
        assert batch.completion_tokens.shape[1] == MAX_NEW
        assert batch.behaviour_logp_a is not None


def test_gkd_mixed_lmbda_draws_both_and_agrees_across_calls(
    tiny_models, facts_task):
  draws = [agents.draw_student_data(jax.random.key(i), 0.5)
           for i in range(40)]
  assert 5 < sum(draws) < 35
  assert draws == [agents.draw_student_data(jax.random.key(i), 0.5)
                   for i in range(40)]


def test_alpha_one_skips_the_reward(tiny_models, facts_task, fixed_batch):
  counter = CountingReward()
  agent = make("gkd_rl", tiny_models, facts_task, reward=counter.model(),
               alpha=1.0)
  _, sp, _, tp = tiny_models
  assert agent.uses_teacher and not agent.uses_reward
  state = agent.init(sp)
  batch, _ = agent.act(state, fixed_batch, jax.random.key(0),
                       teacher_params=tp)
  assert batch.rewards is None and counter.calls == 0
  agent.update(state, batch, tp, jax.random.key(0))
  assert counter.calls == 0


def test_alpha_zero_never_runs_the_teacher(tiny_models, facts_task,
                                           fixed_batch):
  student, sp, teacher, _ = tiny_models
  calls = []

  def spy(*args, **kwargs):
    calls.append(1)
    return teacher.hidden(*args, **kwargs)

  spied = teacher._replace(hidden=spy, apply=spy)
  config = agents.GKDRLConfig(alpha=0.0, max_new_tokens=MAX_NEW)
  counter = CountingReward()
  agent = agents.make_agent(config, student=student, teacher=spied,
                            tokenizer=facts_task.tokenizer,
                            reward=counter.model())
  assert agent.uses_reward and not agent.uses_teacher
  state = agent.init(sp)
  batch, _ = agent.act(state, fixed_batch, jax.random.key(0))
  state, metrics = agent.update(state, batch, None, jax.random.key(0))
  assert calls == [] and counter.calls == 1
  assert "kl/teacher" not in metrics


def test_rl_reference_kl_and_ppo_epochs(tiny_models, facts_task,
                                        fixed_batch):
  _, sp, _, _ = tiny_models
  agent = make("rl", tiny_models, facts_task, ref_kl_coef=0.1, ppo_epochs=3)
  state = agent.init(sp)
  assert state.ref_params is not None
  batch, _ = agent.act(state, fixed_batch, jax.random.key(0))
  # `update` donates `state`: keep a copy of its parameters.
  initial = jax.tree.map(lambda x: np.array(x, copy=True), state.params)
  new_state, metrics = agent.update(state, batch, None, jax.random.key(1))
  assert int(new_state.step) == 3
  # First epoch is on-policy: KL to the reference starts at zero.
  assert float(metrics["kl/reference"]) == pytest.approx(0.0, abs=1e-6)
  assert float(metrics["ppo/clip_fraction"]) == 0.0
  leaves = jax.tree.leaves(jax.tree.map(lambda a, b: np.abs(a - b).max(),
                                        new_state.ref_params, initial))
  assert max(leaves) == 0.0  # the reference never moves


def test_update_skips_non_finite_steps(tiny_models, facts_task, fixed_batch):
  agent = make("sft", tiny_models, facts_task)
  _, sp, _, _ = tiny_models
  state = agent.init(sp)
  bad = jax.tree.map(lambda p: p * np.nan, state.params)
  state = state._replace(params=bad)
  batch, _ = agent.act(state, fixed_batch, jax.random.key(0))
  new_state, metrics = agent.update(state, batch, None, jax.random.key(0))
  assert float(metrics["train/skipped"]) == 1.0
  assert int(new_state.step) == 0


def test_config_errors():
  with pytest.raises(ValueError, match=r"alpha=1\.5"):
    agents.GKDRLConfig(alpha=1.5)
  with pytest.raises(ValueError, match=r"lmbda=-0\.1"):
    agents.GKDConfig(lmbda=-0.1)
  with pytest.raises(ValueError, match=r"beta=2"):
    agents.GKDConfig(beta=2)
  with pytest.raises(ValueError, match="divergence='kl'"):
    agents.GKDConfig(divergence="kl")
  with pytest.raises(ValueError, match="rloo.*samples_per_prompt"):
    agents.RLConfig(baseline="rloo")
  with pytest.raises(ValueError, match="max_new_tokens=0"):
    agents.SFTConfig(max_new_tokens=0)
  with pytest.raises(ValueError, match="learning_rate=0"):
    agents.OptimizerConfig(learning_rate=0)
  with pytest.raises(ValueError, match="agent='ppo'.*gkd_rl"):
    agents.make_config("ppo")
  with pytest.raises(dataclasses.FrozenInstanceError):
    agents.GKDConfig().lmbda = 0.5  # pytype: disable=not-writable


def test_vocabulary_mismatch_and_missing_parts(tiny_models, facts_task):
  student, _, teacher, _ = tiny_models
  other = teacher._replace(config=dataclasses.replace(
      teacher.config, vocab_size=teacher.config.vocab_size + 1))
  with pytest.raises(ValueError, match=r"teacher vocab_size=\d+.*student "
                     r"vocab_size=\d+"):
    agents.make_agent(agents.GKDConfig(), student=student, teacher=other)
  with pytest.raises(ValueError, match="needs a teacher"):
    agents.make_agent(agents.GKDConfig(), student=student)
  with pytest.raises(ValueError, match="needs a reward"):
    agents.make_agent(agents.RLConfig(), student=student,
                      tokenizer=facts_task.tokenizer)


def _spy(monkeypatch, module, function) -> list:
  """Counts the calls (traces, under jit) of `module.function`."""
  original, calls = getattr(module, function), []

  def spy(*args, **kwargs):
    calls.append(1)
    return original(*args, **kwargs)

  monkeypatch.setattr(module, function, spy)
  return calls


@pytest.mark.parametrize("name", ["gkd", "supervised_kd"])
def test_chunked_loss_path_matches_the_logits_path(name, tiny_models,
                                                   facts_task, fixed_batch,
                                                   monkeypatch):
  _, sp, _, tp = tiny_models
  calls = _spy(monkeypatch, chunked, "_chunked_values")
  kwargs = {"gkd": {"lmbda": 0.0}, "supervised_kd": {}}[name]
  results = []
  for chunk in (0, 3):
    agent = make(name, tiny_models, facts_task, loss_chunk_size=chunk,
                 **kwargs)
    state = agent.init(sp)
    batch, _ = agent.act(state, fixed_batch, jax.random.key(0),
                         teacher_params=tp, reward_params=())
    new_state, metrics = agent.update(state, batch, tp, jax.random.key(0))
    results.append((metrics, new_state.params))
    # Only the chunked setting takes the chunked path (traced once).
    assert len(calls) == (chunk > 0), (chunk, calls)
  (m0, p0), (m1, p1) = results
  np.testing.assert_allclose(m0["loss/total"], m1["loss/total"], rtol=1e-5)
  np.testing.assert_allclose(m0["kl/teacher"], m1["kl/teacher"], rtol=1e-5)
  # Adam's first step moves each parameter by lr * g / (|g| + 1e-8): where
  # a gradient element is near 1e-8, the paths' different rounding of it
  # moves the update by a fraction of a percent of lr (0.26% seen, on an
  # Intel CPU). A wrong gradient moves most elements by about lr.
  for a, b in zip(jax.tree.leaves(p0), jax.tree.leaves(p1)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-2 * LEARNING_RATE)


@pytest.mark.parametrize("kl_mode", ["analytic", "sampled"])
def test_gkd_rl_chunked_divergence_matches_the_plain_one(
    kl_mode, tiny_models, facts_task, fixed_batch, monkeypatch):
  student, sp, teacher, tp = tiny_models
  calls = _spy(monkeypatch, row_chunks, "per_position_values")
  batch = None
  results = []
  for chunk in (0, 3):
    agent = make("gkd_rl", tiny_models, facts_task, loss_chunk_size=chunk,
                 alpha=0.5, samples_per_prompt=2, kl_mode=kl_mode,
                 divergence="jsd", ref_kl_coef=0.1)
    state = agent.init(sp)
    if batch is None:
      batch, _ = agent.act(state, fixed_batch, jax.random.key(0),
                           teacher_params=tp, reward_params=())
    loss = agents.make_gkd_rl_loss(agent.config, student, teacher)
    fn = lambda p, s=state, loss=loss: loss(p, s, batch, tp, None, alpha=0.5)
    results.append(jax.jit(jax.value_and_grad(fn, has_aux=True))(sp))
    # Only the analytic divergence with chunks takes the row-chunk path.
    assert len(calls) == (chunk > 0 and kl_mode == "analytic")
  ((l0, m0), g0), ((l1, m1), g1) = results
  np.testing.assert_allclose(l0, l1, rtol=1e-5)
  for key in ("loss/divergence", "loss/pg", "kl/teacher", "kl/reference"):
    np.testing.assert_allclose(m0[key], m1[key], rtol=1e-5, atol=1e-7,
                               err_msg=key)
  for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_large_vocabularies_chunk_by_default():
  config = agents.GKDConfig()
  assert config.chunk_size(151_936) == 128
  assert config.chunk_size(196) == 0
  assert agents.GKDRLConfig().chunk_size(151_936) == 128
  assert agents.GKDConfig(loss_chunk_size=0).chunk_size(151_936) == 0
  with pytest.raises(ValueError, match="loss_chunk_size=-1"):
    agents.GKDConfig(loss_chunk_size=-1)


def test_teacher_runs_ahead_of_host_rewards_with_the_same_update(
    tiny_models, facts_task, fixed_batch):
  _, sp, _, tp = tiny_models
  agent = make("gkd_rl", tiny_models, facts_task, alpha=0.5)
  batch, _ = agent.act(agent.init(sp), fixed_batch, jax.random.key(0),
                       teacher_params=tp, reward_params=())
  assert batch.teacher_hidden is not None
  assert batch.teacher_hidden.shape[:2] == batch.completion_tokens.shape
  results = [agent.update(agent.init(sp), b, tp, jax.random.key(1))
             for b in (batch, batch._replace(teacher_hidden=None))]
  (s0, m0), (s1, m1) = results
  for key in ("loss/total", "kl/teacher", "loss/divergence"):
    np.testing.assert_allclose(m0[key], m1[key], rtol=1e-5, err_msg=key)
  for a, b in zip(jax.tree.leaves(s0.params), jax.tree.leaves(s1.params)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_gkd_rl_loss_with_a_traced_alpha_equals_the_fixed_alpha_losses(
    tiny_models, facts_task, fixed_batch):
  student, sp, teacher, tp = tiny_models
  agent = make("gkd_rl", tiny_models, facts_task, alpha=0.5,
               samples_per_prompt=2, ref_kl_coef=0.1)
  state = agent.init(sp)
  batch, _ = agent.act(state, fixed_batch, jax.random.key(0),
                       teacher_params=tp, reward_params=())
  batch = batch._replace(teacher_hidden=None)
  loss = agents.make_gkd_rl_loss(agent.config, student, teacher)
  key = jax.random.key(1)

  def value_and_grad(alpha, batch):
    fn = lambda p: loss(p, state, batch, tp, key, alpha=alpha)
    return jax.value_and_grad(fn, has_aux=True)(state.params)

  # One student per alpha under vmap, as sweep_alpha --vectorized trains.
  alphas = (0.0, 1.0)  # where the fixed-alpha loss skips teacher / rewards
  traced = jax.jit(jax.vmap(value_and_grad, in_axes=(0, None)))(
      jnp.asarray(alphas, jnp.float32), batch)
  fixed = jax.jit(value_and_grad, static_argnums=0)
  for i, alpha in enumerate(alphas):
    (loss_f, metrics_f), grads_f = fixed(alpha, batch)
    (loss_t, metrics_t), grads_t = jax.tree.map(lambda x, i=i: x[i], traced)
    assert np.isfinite(float(loss_t))
    np.testing.assert_allclose(loss_t, loss_f, rtol=1e-5, atol=1e-7)
    for name in ("loss/pg", "loss/divergence", "kl/reference"):
      np.testing.assert_allclose(metrics_t[name], metrics_f[name],
                                 rtol=1e-5, atol=1e-6, err_msg=name)
    for a, b in zip(jax.tree.leaves(grads_t), jax.tree.leaves(grads_f)):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
