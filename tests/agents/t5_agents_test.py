"""Every agent trains a tiny random T5 student against a T5 teacher."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gkdrl import agents
from gkdrl import networks
from gkdrl import types
from tests.agents.agents_test import AGENT_KWARGS
from tests.agents.agents_test import make
from tests.tiny_models import tiny_config
from tests.tiny_models import tiny_t5_config


@pytest.fixture(scope="module")
def t5_models(facts_task):
  """(student, student_params, teacher, teacher_params): v1.0 and v1.1."""
  student = networks.make_t5(tiny_t5_config(facts_task, 16, 1))
  teacher = networks.make_t5(tiny_t5_config(facts_task, 24, 2, gated=True))
  return (student, student.init(jax.random.key(0)), teacher,
          teacher.init(jax.random.key(1)))


def _changed(old, new) -> dict[str, bool]:
  """{module: any of its parameters changed}."""
  return {k: any(not np.array_equal(a, b) for a, b in zip(
      jax.tree.leaves(old[k]), jax.tree.leaves(new[k]))) for k in old}


# The T5 GKD and gkd_rl runs stay in the quick subset; the other agents'
# T5 runs (each compiles its own sampler and update) are slow.
_QUICK = ("gkd", "gkd_rl")


@pytest.mark.parametrize("name", [
    name if name in _QUICK else pytest.param(name, marks=pytest.mark.slow)
    for name in sorted(AGENT_KWARGS)])
def test_each_agent_updates_a_t5_student(name, t5_models, facts_task,
                                         fixed_batch):
  agent = make(name, t5_models, facts_task, **AGENT_KWARGS[name])
  _, sp, _, tp = t5_models
  state = agent.init(sp)
  before = jax.tree.map(np.asarray, state.params)
  batch, info = agent.act(state, fixed_batch, jax.random.key(0),
                          teacher_params=tp, reward_params=())
  assert info["rollout/length"] > 0
  state, metrics = agent.update(state, batch, tp, jax.random.key(1))
  assert np.isfinite(float(metrics["loss/total"]))
  assert float(metrics["train/skipped"]) == 0.0
  changed = _changed(before, jax.tree.map(np.asarray, state.params))
  # The encoder is differentiated too, not only the decoder.
  assert any(v for k, v in changed.items() if "encoder" in k), changed
  assert any(v for k, v in changed.items() if "decoder" in k), changed


def test_completion_logits_are_apply_on_teacher_forced_inputs(
    t5_models, fixed_batch):
  student, sp, _, _ = t5_models
  batch = types.Batch(
      prompt_tokens=fixed_batch.prompt_tokens,
      prompt_mask=fixed_batch.prompt_mask,
      completion_tokens=fixed_batch.target_tokens,
      completion_mask=fixed_batch.target_mask)
  completion, cmask = batch.completion_tokens, batch.completion_mask
  start = student.config.decoder_start_token_id
  rows, apply = [], jax.jit(student.apply)
  for b in range(completion.shape[0]):
    # One row at a time, its prompt without padding: an independent
    # reference for the batched, padded call.
    src = batch.prompt_tokens[b][batch.prompt_mask[b].astype(bool)][None]
    n = int(cmask[b].sum())
    dec = np.concatenate([[start], completion[b, :n - 1]])[None]
    rows.append((n, apply(sp, src, None, jnp.asarray(dec))[0]))
  logits = jax.jit(agents.completion_logits, static_argnums=0)(
      student, sp, batch)  # [B, T, V]
  assert logits.shape[:2] == completion.shape
  for b, (n, expected) in enumerate(rows):
    np.testing.assert_allclose(logits[b, :n], expected, atol=1e-5)


def _supervised_kd_loss(t5_models, facts_task, fixed_batch, **settings):
  """The loss of one supervised_kd update of the T5 student."""
  _, sp, _, tp = t5_models
  agent = make("supervised_kd", t5_models, facts_task, **settings)
  state = agent.init(sp)
  batch, _ = agent.act(state, fixed_batch, jax.random.key(0),
                       teacher_params=tp, reward_params=())
  _, metrics = agent.update(state, batch, tp, jax.random.key(0))
  return float(metrics["loss/total"])


@pytest.fixture(scope="module")
def default_loss(t5_models, facts_task, fixed_batch):
  """The default settings' loss, computed once for every setting below."""
  return _supervised_kd_loss(t5_models, facts_task, fixed_batch)


@pytest.mark.parametrize("settings", [
    {"remat": "full"}, {"remat": "dots"}, {"compute_dtype": "bfloat16"},
    {"loss_chunk_size": 3}])
def test_memory_settings_give_the_same_t5_update(settings, default_loss,
                                                 t5_models, facts_task,
                                                 fixed_batch):
  loss = _supervised_kd_loss(t5_models, facts_task, fixed_batch, **settings)
  rtol = 2e-2 if "compute_dtype" in settings else 1e-5
  np.testing.assert_allclose(loss, default_loss, rtol=rtol)


@pytest.mark.slow
def test_bfloat16_params_train_a_t5_student(t5_models, facts_task,
                                            fixed_batch):
  _, sp, _, tp = t5_models
  agent = make("gkd", t5_models, facts_task, param_dtype="bfloat16",
               lmbda=1.0)
  state = agent.init(sp)
  assert all(p.dtype == jnp.bfloat16 for p in jax.tree.leaves(state.params))
  batch, _ = agent.act(state, fixed_batch, jax.random.key(0),
                       teacher_params=tp, reward_params=())
  state, metrics = agent.update(state, batch, tp, jax.random.key(1))
  assert np.isfinite(float(metrics["loss/total"]))
  assert int(state.step) == 1


@pytest.mark.slow
def test_gkd_lowers_the_teacher_kl_of_a_t5_student(t5_models, facts_task):
  _, sp, _, tp = t5_models
  agent = make("gkd", t5_models, facts_task, lmbda=1.0,
               divergence="forward_kl")
  state = agent.init(sp)
  batches = itertools.cycle(list(facts_task.batches("train", 8,
                                                    fixed_shape=True)))
  kls = []
  for i in range(30):
    batch, _ = agent.act(state, next(batches), jax.random.key(i),
                         teacher_params=tp, reward_params=())
    state, metrics = agent.update(state, batch, tp, jax.random.key(i))
    kls.append(float(metrics["kl/teacher"]))
  assert np.all(np.isfinite(kls))
  assert np.mean(kls[-5:]) < 0.7 * np.mean(kls[:5]), kls


def test_mixed_kinds_need_one_vocabulary(t5_models, facts_task, fixed_batch):
  t5_student, t5_params, _, _ = t5_models
  llama = networks.make_model(tiny_config(facts_task, 16, 1))
  lp = llama.init(jax.random.key(2))
  # One vocabulary: a decoder-only teacher teaches a T5 student.
  agent = agents.make_agent(agents.make_config("supervised_kd",
                                               max_new_tokens=8),
                            student=t5_student, teacher=llama,
                            tokenizer=facts_task.tokenizer)
  state = agent.init(t5_params)
  batch, _ = agent.act(state, fixed_batch, jax.random.key(0),
                       teacher_params=lp, reward_params=())
  _, metrics = agent.update(state, batch, lp, jax.random.key(0))
  assert np.isfinite(float(metrics["loss/total"]))
  other = networks.make_t5(networks.T5Config(
      vocab_size=len(facts_task.tokenizer) + 5, d_model=8, n_layers=1,
      n_heads=1, head_dim=8, d_ff=8))
  with pytest.raises(ValueError, match="decoder-only teacher and a "
                     "encoder-decoder student|decoder-only student"):
    agents.make_agent(agents.GKDConfig(), student=llama, teacher=other)
