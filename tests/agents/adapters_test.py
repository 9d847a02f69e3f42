"""LoRA students: adapters on a frozen base, through every agent's update."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gkdrl import agents
from gkdrl import reward_models
from gkdrl.agents import base
from gkdrl.networks import lora

MAX_NEW = 8
RANK = 4


def length_reward():
  def fn(sources, completions, targets):
    del sources, targets
    return np.array([len(c.split()) / 10 for c in completions], np.float32)
  return reward_models.make_python_reward(fn, name="length")


def make(name, models, task, lr=3e-2, **kwargs):
  student, _, teacher, _ = models
  config = agents.make_config(
      name, max_new_tokens=MAX_NEW, lora_rank=RANK, lora_alpha=8.0,
      optimizer=agents.OptimizerConfig(learning_rate=lr, warmup_steps=0),
      **kwargs)
  return agents.make_agent(config, student=student, teacher=teacher,
                           tokenizer=task.tokenizer, reward=length_reward())


def teacher_kl(models, student_params, batch) -> float:
  """Mean KL(teacher || student) per completion token, in float64 NumPy."""
  student, _, teacher, tp = models
  batch = agents.acting.dataset_batch(batch)
  s = np.asarray(base.completion_logits(student, student_params, batch),
                 np.float64)
  t = np.asarray(base.completion_logits(teacher, tp, batch), np.float64)
  log_s = s - np.log(np.exp(s - s.max(-1, keepdims=True)).sum(
      -1, keepdims=True)) - s.max(-1, keepdims=True)
  log_t = t - np.log(np.exp(t - t.max(-1, keepdims=True)).sum(
      -1, keepdims=True)) - t.max(-1, keepdims=True)
  kl = (np.exp(log_t) * (log_t - log_s)).sum(-1)  # [B, T]
  mask = np.asarray(batch.completion_mask, np.float64)
  return float((kl * mask).sum() / mask.sum())


def test_lora_gkd_lowers_the_teacher_kl(tiny_models, facts_task,
                                        fixed_batch):
  _, sp, _, tp = tiny_models
  agent = make("gkd", tiny_models, facts_task, lmbda=1.0,
               divergence="forward_kl")
  state = agent.init(sp)
  before = teacher_kl(tiny_models, agent.model_params(state), fixed_batch)
  assert before == pytest.approx(teacher_kl(tiny_models, sp, fixed_batch),
                                 rel=1e-6)  # the initial model is the base
  batches = list(facts_task.batches("train", 8, fixed_shape=True))
  for i in range(30):
    batch, _ = agent.act(state, batches[i % len(batches)], jax.random.key(i),
                         teacher_params=tp)
    state, metrics = agent.update(state, batch, tp, jax.random.key(i))
    assert float(metrics["train/skipped"]) == 0.0
  after = teacher_kl(tiny_models, agent.model_params(state), fixed_batch)
  assert after < 0.9 * before, (before, after)


def test_only_the_adapters_are_trained(tiny_models, facts_task, fixed_batch):
  _, sp, _, tp = tiny_models
  agent = make("supervised_kd", tiny_models, facts_task)
  state = agent.init(sp)
  assert state.params.keys() == {lora.TARGET_MODULES[t]
                                 for t in lora.DEFAULT_TARGETS}
  config = tiny_models[0].config
  assert lora.num_parameters(state.params) == config.n_layers * RANK * (
      2 * (config.d_model + config.n_heads * config.head_dim)
      + 2 * (config.d_model + config.n_kv_heads * config.head_dim)
      + 3 * (config.d_model + config.d_ff))
  # Optimizer moments exist for the adapters only.
  adapter_shapes = {x.shape for x in jax.tree.leaves(state.params)}
  moment_shapes = {x.shape for x in jax.tree.leaves(state.opt_state)
                   if x.ndim}
  assert moment_shapes == adapter_shapes
  jax.tree.map(np.testing.assert_array_equal, agent.model_params(state), sp)
  frozen = jax.tree.map(np.array, state.frozen)
  batch, _ = agent.act(state, fixed_batch, jax.random.key(0))
  for i in range(3):
    state, _ = agent.update(state, batch, tp, jax.random.key(i))
  jax.tree.map(np.testing.assert_array_equal, state.frozen, frozen)
  b = state.params[lora.TARGET_MODULES["query"]]["b"]
  assert np.abs(np.asarray(b)).max() > 0
  merged = agent.model_params(state)
  assert not np.allclose(merged[lora.TARGET_MODULES["query"]]["w"],
                         sp[lora.TARGET_MODULES["query"]]["w"])
  np.testing.assert_array_equal(merged["lm/embed"]["embeddings"],
                                sp["lm/embed"]["embeddings"])


@pytest.mark.parametrize("name,kwargs", [
    ("sft", {}),
    ("gkd_rl", {"alpha": 0.5, "samples_per_prompt": 2}),
    ("rl", {"samples_per_prompt": 2, "baseline": "rloo"}),
])
def test_every_agent_trains_with_lora(name, kwargs, tiny_models, facts_task,
                                      fixed_batch):
  _, sp, _, tp = tiny_models
  agent = make(name, tiny_models, facts_task, **kwargs)
  state = agent.init(sp)
  batch, _ = agent.act(state, fixed_batch, jax.random.key(0),
                       teacher_params=tp, reward_params=())
  losses = []
  for i in range(6):
    state, metrics = agent.update(state, batch, tp, jax.random.key(i))
    losses.append(float(metrics["loss/total"]))
  assert losses[-1] < losses[0], losses


def test_the_reference_is_the_frozen_base(tiny_models, facts_task,
                                          fixed_batch):
  _, sp, _, _ = tiny_models
  agent = make("rl", tiny_models, facts_task, ref_kl_coef=0.1, ppo_epochs=3,
               lr=1e-1)
  state = agent.init(sp)
  assert state.ref_params is None  # no copy of the base is kept
  batch, _ = agent.act(state, fixed_batch, jax.random.key(0))
  state, metrics = agent.update(state, batch, None, jax.random.key(1))
  assert float(metrics["kl/reference"]) == pytest.approx(0.0, abs=1e-6)
  # The adapters moved; the reference did not.
  _, metrics = agent.update(state, batch, None, jax.random.key(2))
  assert float(metrics["kl/reference"]) > 1e-6


def test_bfloat16_base(tiny_models, facts_task, fixed_batch):
  _, sp, _, tp = tiny_models
  agent = make("supervised_kd", tiny_models, facts_task,
               lora_base_dtype="bfloat16")
  state = agent.init(sp)
  assert {x.dtype for x in jax.tree.leaves(state.frozen)} == {
      jnp.dtype(jnp.bfloat16)}
  assert {x.dtype for x in jax.tree.leaves(state.params)} == {
      jnp.dtype(jnp.float32)}
  batch, _ = agent.act(state, fixed_batch, jax.random.key(0))
  losses = []
  for i in range(4):
    state, metrics = agent.update(state, batch, tp, jax.random.key(i))
    losses.append(float(metrics["loss/total"]))
  assert losses[-1] < losses[0], losses


@pytest.mark.parametrize("kwargs,message", [
    ({"lora_rank": -1}, "lora_rank=-1"),
    ({"lora_rank": 2, "lora_alpha": 0.0}, "lora_alpha=0.0"),
    ({"lora_targets": ("q_proj",)}, "lora_targets="),
    ({"lora_base_dtype": "float16"}, "lora_base_dtype='float16'"),
])
def test_bad_lora_settings_are_named(kwargs, message):
  with pytest.raises(ValueError, match=message):
    agents.GKDConfig(**kwargs)


def test_stacked_agent_refuses_lora(tiny_models, facts_task):
  student, _, teacher, _ = tiny_models
  with pytest.raises(ValueError, match="lora_rank=2"):
    agents.make_stacked_agent(
        agents.GKDRLConfig(lora_rank=2), alphas=[0.0, 1.0], student=student,
        teacher=teacher, tokenizer=facts_task.tokenizer,
        reward=length_reward())
