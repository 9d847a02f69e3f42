"""The shared update: buffer donation, compile counting, dtypes."""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gkdrl import agents
from gkdrl import reward_models
from gkdrl.agents import acting
from gkdrl.agents import base
from gkdrl.agents import optimizer


def nll_loss(student):
  """A plain NLL loss of the completion tokens, as agents build them."""

  def loss_fn(params, state, batch, teacher_params, key):
    del state, teacher_params, key
    logp = base.token_log_probs(
        base.completion_logits(student, params, batch),
        batch.completion_tokens)  # [B, T]
    loss = -jnp.sum(logp * batch.completion_mask) / jnp.sum(
        batch.completion_mask)
    return loss, {"loss/nll": loss}

  return loss_fn


def floating_dtypes(tree) -> set[np.dtype]:
  return {x.dtype for x in jax.tree.leaves(tree)
          if jnp.issubdtype(x.dtype, jnp.floating)}


def leaves_deleted(tree) -> list[bool]:
  return [leaf.is_deleted() for leaf in jax.tree.leaves(tree)]


def test_update_donates_the_state_and_changes_no_result(tiny_models,
                                                        fixed_batch):
  student, sp, _, _ = tiny_models
  optimizer = optax.adam(1e-2)
  init = base.make_init(optimizer, keep_reference=True)
  donating = base.make_update(nll_loss(student), optimizer)
  plain = jax.jit(base.make_update(nll_loss(student), optimizer, jit=False))
  batch = acting.dataset_batch(fixed_batch)
  key = jax.random.key(0)

  ref_state, ref_metrics = plain(init(sp), batch, None, key)
  state = init(sp)
  new_state, metrics = donating(state, batch, None, key)
  # The donated state is gone; the caller's parameters (copied by init) and
  # the batch are not.
  assert all(leaves_deleted(state))
  assert not any(leaves_deleted(sp)) and not any(leaves_deleted(batch))
  for a, b in zip(jax.tree.leaves((ref_state, ref_metrics)),
                  jax.tree.leaves((new_state, metrics))):
    np.testing.assert_array_equal(a, b)
  # The reference parameters pass through the update unchanged.
  for a, b in zip(jax.tree.leaves(new_state.ref_params),
                  jax.tree.leaves(sp)):
    np.testing.assert_array_equal(a, b)

  # A non-finite step returns the old values, although their buffers were
  # donated.
  bad = new_state._replace(params=jax.tree.map(
      lambda p: p.at[(0,) * p.ndim].set(jnp.nan), new_state.params))
  # Copies: a NumPy view of a CPU buffer would keep it from being donated.
  expected = jax.tree.map(lambda x: np.array(x, copy=True), bad)
  kept, metrics = donating(bad, batch, None, key)
  assert float(metrics["train/skipped"]) == 1.0 and all(leaves_deleted(bad))
  for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(kept)):
    np.testing.assert_array_equal(a, b)


def test_compiles_are_counted_once_per_shape_and_logged(
    tiny_models, fixed_batch, caplog):
  student, sp, _, _ = tiny_models
  optimizer = optax.sgd(1e-2)
  init = base.make_init(optimizer, keep_reference=False)
  update = base.make_update(nll_loss(student), optimizer)
  batch = acting.dataset_batch(fixed_batch)
  shorter = batch._replace(completion_tokens=batch.completion_tokens[:, :4],
                           completion_mask=batch.completion_mask[:, :4])
  before = base.compile_counts().get("update", 0)
  caplog.set_level(logging.INFO, logger="absl")
  state = init(sp)
  for b in (batch, batch, shorter, batch, shorter):
    state, _ = update(state, b, None, jax.random.key(0))
  assert base.compile_counts()["update"] - before == 2
  lines = [r.getMessage() for r in caplog.records
           if r.getMessage().startswith("compiling update for shapes")]
  assert len(lines) == 2
  assert "batch.completion_tokens=int32[4, 4]" in lines[1], lines


def test_param_dtype_stores_params_and_optimizer_state_in_bfloat16(
    tiny_models, fixed_batch):
  student, sp, _, _ = tiny_models
  optimizer = optax.adam(3e-2)
  init = base.make_init(optimizer, keep_reference=False,
                        param_dtype="bfloat16")
  update = base.make_update(nll_loss(student), optimizer)
  state = init(sp)
  batch = acting.dataset_batch(fixed_batch)
  dtypes = lambda tree: {x.dtype for x in jax.tree.leaves(tree)
                         if jnp.issubdtype(x.dtype, jnp.floating)}
  assert dtypes(state.params) == {jnp.dtype(jnp.bfloat16)}
  assert dtypes(state.opt_state) == {jnp.dtype(jnp.bfloat16)}
  assert dtypes(sp) == {jnp.dtype(jnp.float32)}  # the caller's, untouched
  losses = []
  for i in range(4):
    state, metrics = update(state, batch, None, jax.random.key(i))
    losses.append(float(metrics["loss/total"]))
  assert dtypes(state.params) == {jnp.dtype(jnp.bfloat16)}
  assert metrics["loss/total"].dtype == jnp.float32
  assert losses[-1] < losses[0], losses
  with pytest.raises(ValueError, match="param_dtype='float16'"):
    agents.SFTConfig(param_dtype="float16")


def _forward_kl_sequence(student_logits, teacher_logits, mask):
  """float64 NumPy KL(teacher || student), mean per sequence then batch."""
  s = np.asarray(student_logits, np.float64)
  t = np.asarray(teacher_logits, np.float64)
  log_q = s - np.log(np.exp(s - s.max(-1, keepdims=True)).sum(
      -1, keepdims=True)) - s.max(-1, keepdims=True)
  log_p = t - np.log(np.exp(t - t.max(-1, keepdims=True)).sum(
      -1, keepdims=True)) - t.max(-1, keepdims=True)
  kl = (np.exp(log_p) * (log_p - log_q)).sum(-1)  # [B, T]
  mask = np.asarray(mask, np.float64)
  return float(((kl * mask).sum(1) / mask.sum(1)).mean())


def test_completion_hidden_is_the_full_pass_at_the_predicting_positions(
    tiny_models, facts_task, fixed_batch):
  student, sp, _, _ = tiny_models
  agent = agents.make_agent(agents.SupervisedKDConfig(), student=student,
                            teacher=student, tokenizer=facts_task.tokenizer)
  batch, _ = agent.act(None, fixed_batch, jax.random.key(0))
  p, t = batch.prompt_tokens.shape[1], batch.completion_tokens.shape[1]
  tokens = jnp.concatenate([batch.prompt_tokens, batch.completion_tokens], 1)
  mask = jnp.concatenate([batch.prompt_mask, batch.completion_mask], 1)
  # Position P - 1 + t predicts completion token t.
  expected = student.hidden(sp, tokens, mask)[:, p - 1:p - 1 + t]
  np.testing.assert_allclose(base.completion_hidden(student, sp, batch),
                             expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("chunk", [0, 3])
def test_bfloat16_compute_keeps_the_divergence_in_float32(
    chunk, tiny_models, facts_task, fixed_batch):
  student, sp, teacher, tp = tiny_models
  config = agents.SupervisedKDConfig(compute_dtype="bfloat16",
                                     loss_chunk_size=chunk)
  agent = agents.make_agent(config, student=student, teacher=teacher,
                            tokenizer=facts_task.tokenizer)
  batch, _ = agent.act(None, fixed_batch, jax.random.key(0))
  # The logits a bfloat16 forward pass gives (float32 accumulation), jitted
  # as in the update: where XLA fuses bfloat16 operations it rounds only
  # their results, so an unjitted pass differs in the last bits.
  logits = jax.jit(base.completion_logits, static_argnums=0)
  s_logits, t_logits = (
      logits(m, base.cast_params(p, "bfloat16"), batch)
      for m, p in ((student, sp), (teacher, tp)))
  f32_logits = base.completion_logits(student, sp, batch)
  assert s_logits.dtype == jnp.float32
  assert float(jnp.max(jnp.abs(s_logits - f32_logits))) > 1e-4  # bf16 ran
  _, metrics = agent.update(agent.init(sp), batch, tp, jax.random.key(0))
  assert metrics["loss/divergence"].dtype == jnp.float32
  expected = _forward_kl_sequence(s_logits, t_logits, batch.completion_mask)
  # bfloat16 divergence arithmetic would be off by ~1e-2 relative.
  np.testing.assert_allclose(float(metrics["loss/divergence"]), expected,
                             rtol=2e-5)


def test_agents_keep_bfloat16_params_and_float32_divergences(
    tiny_models, facts_task, fixed_batch):
  student, sp, teacher, tp = tiny_models
  length = lambda sources, completions, targets: np.array(
      [len(c) / 10 for c in completions], np.float32)
  config = agents.GKDRLConfig(
      param_dtype="bfloat16", alpha=0.5, divergence="forward_kl",
      ref_kl_coef=0.1, max_new_tokens=6, samples_per_prompt=2,
      optimizer=agents.OptimizerConfig(learning_rate=1e-2, warmup_steps=0))
  agent = agents.make_agent(
      config, student=student, teacher=teacher,
      tokenizer=facts_task.tokenizer,
      reward=reward_models.make_python_reward(length, name="length"))
  state = agent.init(sp)
  bf16 = {jnp.dtype(jnp.bfloat16)}
  assert floating_dtypes(state.params) == bf16
  assert floating_dtypes(state.ref_params) == bf16
  assert floating_dtypes(state.opt_state) == bf16
  for got, want in zip(jax.tree.leaves(state.params), jax.tree.leaves(sp)):
    np.testing.assert_array_equal(
        np.asarray(got, np.float32),
        np.asarray(want.astype(jnp.bfloat16), np.float32))
  batch, _ = agent.act(state, fixed_batch, jax.random.key(0),
                       teacher_params=tp, reward_params=())
  # The student's logits are those of its stored (rounded) parameters,
  # computed in float32 (compute_dtype); taken before `update` donates them.
  s_logits = base.completion_logits(
      student, base.cast_params(state.params, "float32"), batch)
  t_logits = base.completion_logits(teacher, tp, batch)
  # Two updates: the second starts from the first one's bfloat16 state.
  new_state, metrics = agent.update(state, batch, tp, jax.random.key(1))
  divergence = metrics["loss/divergence"]
  new_state, metrics = agent.update(new_state, batch, tp, jax.random.key(2))
  assert floating_dtypes(new_state.params) == bf16
  assert floating_dtypes(new_state.opt_state) == bf16
  assert int(new_state.step) == 2
  assert float(metrics["train/skipped"]) == 0.0
  changed = [not np.array_equal(np.asarray(a, np.float32),
                                np.asarray(b.astype(jnp.bfloat16), np.float32))
             for a, b in zip(jax.tree.leaves(new_state.params),
                             jax.tree.leaves(sp))]
  assert any(changed)
  assert divergence.dtype == jnp.float32
  expected = _forward_kl_sequence(s_logits, t_logits, batch.completion_mask)
  np.testing.assert_allclose(float(divergence), expected, rtol=2e-5)


@pytest.mark.parametrize("warmup, decay", [(0, 0), (0, 100), (10, 5),
                                           (10, 100)])
def test_schedule_warms_up_linearly_and_never_starts_at_zero_without_warmup(
    warmup, decay):
  peak = 0.5
  schedule = optimizer.make_schedule(agents.OptimizerConfig(
      learning_rate=peak, warmup_steps=warmup, decay_steps=decay))
  rates = np.array([float(schedule(i)) for i in range(12)])
  if warmup == 0:
    assert rates[0] == pytest.approx(peak)
  else:
    np.testing.assert_allclose(rates[:warmup + 1],
                               peak * np.arange(warmup + 1) / warmup,
                               rtol=1e-6, atol=1e-9)
  if decay <= warmup:
    np.testing.assert_allclose(rates[warmup:], peak, rtol=1e-6)
  else:
    assert np.all(np.diff(rates[warmup:]) <= 1e-9)


@pytest.mark.parametrize("name,kwargs", [
    ("supervised_kd", dict(loss_chunk_size=0)),  # student logits
    ("supervised_kd", dict(loss_chunk_size=3)),  # student hidden states
    ("gkd_rl", dict(alpha=0.5, ref_kl_coef=0.1)),  # its own loss
])
def test_remat_reaches_only_the_student_loss_and_changes_no_update(
    name, kwargs, tiny_models, facts_task, fixed_batch):
  student, sp, teacher, tp = tiny_models
  calls = []

  def spy(model, role):
    def hidden(*args, remat="none", unroll=False, **kw):
      calls.append((role, remat, unroll))
      return model.hidden(*args, remat=remat, unroll=unroll, **kw)
    return model._replace(hidden=hidden)

  batch = acting.dataset_batch(fixed_batch)
  batch = batch._replace(rewards=jnp.linspace(0.0, 1.0, 4))
  results, traced = {}, {}
  for remat in ("none", "full"):
    config = agents.make_config(
        name, remat=remat, optimizer=agents.OptimizerConfig(
            learning_rate=1e-2, warmup_steps=0), **kwargs)
    agent = agents.make_agent(
        config, student=spy(student, "student"),
        teacher=spy(teacher, "teacher"), tokenizer=facts_task.tokenizer,
        reward=reward_models.make_python_reward(lambda *a: None))
    calls.clear()
    results[remat] = agent.update(agent.init(sp), batch, tp,
                                  jax.random.key(0))
    traced[remat] = sorted(calls)
  # The student's differentiated forward pass rematerialises, or without
  # remat runs its layers unrolled; the teacher and the frozen reference
  # (gkd_rl) run neither way.
  reference = [("student", "none", False)] if name == "gkd_rl" else []
  assert traced["full"] == sorted(
      [("student", "full", False), ("teacher", "none", False)] + reference)
  assert traced["none"] == sorted(
      [("student", "none", True), ("teacher", "none", False)] + reference)
  (state, metrics), (want_state, want_metrics) = (results["full"],
                                                  results["none"])
  assert float(metrics["train/skipped"]) == 0.0
  assert np.isfinite(float(metrics["loss/total"]))
  # Unrolled, the student's last layer works at the completion positions
  # only (`hidden(..., last=T)`), in the remat mode's scan in full: the
  # rounding differs, and Adam's normalised step carries it into the
  # parameters (seen: 1.6e-5 relative).
  for got, want in zip(jax.tree.leaves((state.params, metrics)),
                       jax.tree.leaves((want_state.params, want_metrics))):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
  assert not np.allclose(state.params["lm/embed"]["embeddings"],
                         sp["lm/embed"]["embeddings"])  # a real update
  with pytest.raises(ValueError, match="remat='some'.*'none'"):
    agents.make_config(name, remat="some", **kwargs)


@pytest.mark.parametrize("kwargs, message", [
    (dict(max_new_tokens=0),
     "max_new_tokens=0 is not allowed; it must be an int >= 1."),
    (dict(max_new_tokens=2.0),
     "max_new_tokens=2.0 is not allowed; it must be an int >= 1."),
    (dict(top_k=-1), "top_k=-1 is not allowed; it must be an int >= 0."),
    (dict(top_p=0.0), "top_p=0.0 is not allowed; allowed values lie in "
     "(0, 1]."),
    (dict(top_p=1.5), "top_p=1.5 is not allowed; allowed values lie in "
     "(0, 1]."),
    (dict(sample_temperature=-1.0), "sample_temperature=-1.0 is not "
     "allowed; allowed values lie in [0.001, 1000] or are 0 (greedy)."),
    (dict(sample_temperature=1e-30), "sample_temperature=1e-30 is not "
     "allowed; allowed values lie in [0.001, 1000] or are 0 (greedy)."),
])
def test_rollout_settings_are_checked_nested_or_flat(kwargs, message):
  for build in (lambda: agents.RolloutConfig(**kwargs),
                lambda: agents.SFTConfig(**kwargs),
                lambda: agents.GKDConfig(
                    rollout=agents.RolloutConfig(), **kwargs)):
    with pytest.raises(ValueError) as error:
      build()
    assert str(error.value) == message


@pytest.mark.parametrize("kwargs, message", [
    (dict(warmup_steps=-1),
     "warmup_steps=-1 is not allowed; it must be an int >= 0."),
    (dict(b1=1.0), "b1=1.0 is not allowed; allowed values lie in [0, 1)."),
    (dict(b2=-0.1), "b2=-0.1 is not allowed; allowed values lie in [0, 1)."),
])
def test_optimizer_settings_use_the_one_message_style(kwargs, message):
  with pytest.raises(ValueError) as error:
    optimizer.OptimizerConfig(**kwargs)
  assert str(error.value) == message


def test_unread_settings_follow_the_agent_and_its_divergence():
  assert agents.GKDConfig().unread_settings().keys() == {"skew"}
  assert agents.GKDConfig(divergence="skew_forward_kl"
                          ).unread_settings().keys() == {"beta",
                                                         "normalized"}
  assert agents.GKDConfig(divergence="tvd").unread_settings().keys() == {
      "beta", "normalized", "skew"}
  schedule = {"alpha_end", "alpha_steps", "target_teacher_kl", "alpha_gain"}
  assert {"ppo_epsilon", "skew"} | schedule == (
      agents.GKDRLConfig().unread_settings().keys())
  assert {"divergence", "beta", "normalized", "skew", "loss_chunk_size",
          "teacher_top_k", "ppo_epsilon"} | schedule == (
              agents.GKDRLConfig(kl_mode="sampled").unread_settings().keys())
  assert agents.RLConfig().unread_settings() == {}
  assert {"sample_temperature", "top_k", "top_p"} <= (
      agents.SFTConfig().unread_settings().keys())
  assert {"sample_temperature", "top_k", "top_p", "skew", "beta",
          "normalized"} == agents.SupervisedKDConfig().unread_settings().keys()
