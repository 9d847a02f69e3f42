"""Gradient accumulation: N micro-batches give the one-big-batch update.

For every registered agent and every reduction, one update with
grad_accum_steps = N in {2, 4} must leave the parameters, the loss and the
gradient norm where grad_accum_steps = 1 leaves them, on one batch whose
rows have different lengths (one row empty), so that a denominator taken
per micro-batch (the classic accumulation bug) would show. The baselines
(the batch mean with one sample per prompt, RLOO across a prompt's
samples) need the whole batch, which the micro-batches do not see.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gkdrl import agents
from gkdrl import losses
from gkdrl import reward_models
from gkdrl import types
from gkdrl.agents import accumulation
from gkdrl.agents import base
from gkdrl.agents import sft

ROWS = 8
# Never called: the updates read the batch's rewards.
REWARD = reward_models.make_python_reward(
    lambda sources, completions, targets: np.zeros(len(completions)),
    name="unused")
# {case: (agent, config kwargs)}: every registered agent, each loss path.
CASES = {
    "sft": ("sft", {}),
    "seqkd": ("seqkd", {}),
    "supervised_kd": ("supervised_kd", {}),
    "gkd": ("gkd", {"divergence": "jsd"}),
    "gkd_chunked": ("gkd", {"divergence": "forward_kl",
                            "loss_chunk_size": 3}),
    "rl_mean": ("rl", {"baseline": "mean"}),
    "rl_rloo": ("rl", {"baseline": "rloo", "samples_per_prompt": 2,
                       "ref_kl_coef": 0.1}),
    "rl_ppo": ("rl", {"baseline": "mean", "samples_per_prompt": 2,
                      "ppo_epochs": 2}),
    "gkd_rl_analytic": ("gkd_rl", {"alpha": 0.5, "baseline": "mean"}),
    "gkd_rl_sampled": ("gkd_rl", {"alpha": 0.5, "kl_mode": "sampled",
                                  "baseline": "rloo",
                                  "samples_per_prompt": 2}),
}


@pytest.fixture(scope="module")
def ragged_batch(facts_task, tiny_models):
  """8 rows of different lengths, row 3 without a valid token."""
  student, sp, _, _ = tiny_models
  tb = next(facts_task.batches("train", ROWS, fixed_shape=True))
  mask = np.asarray(tb.target_mask, bool).copy()
  lengths = mask.sum(axis=1)
  for row, keep in enumerate([9, 1, 4, 0, 7, 2, 9, 3]):
    mask[row, min(keep, lengths[row]):] = False
  batch = types.Batch(
      prompt_tokens=jnp.asarray(tb.prompt_tokens),
      prompt_mask=jnp.asarray(tb.prompt_mask),
      completion_tokens=jnp.asarray(tb.target_tokens),
      completion_mask=jnp.asarray(mask))
  logp = base.token_log_probs(base.completion_logits(student, sp, batch),
                              batch.completion_tokens)
  noise = 0.1 * jax.random.normal(jax.random.key(5), logp.shape)
  return batch._replace(
      behaviour_logp_a=jnp.where(batch.completion_mask, logp + noise, 0.0),
      rewards=jax.random.normal(jax.random.key(6), (ROWS,)))


def one_update(name, kwargs, models, task, batch, steps):
  student, sp, teacher, tp = models
  config = agents.make_config(
      name, max_new_tokens=4, grad_accum_steps=steps,
      optimizer=agents.OptimizerConfig(learning_rate=1e-2, warmup_steps=0),
      **kwargs)
  agent = agents.make_agent(config, student=student, teacher=teacher,
                            tokenizer=task.tokenizer,
                            reward=REWARD)
  return agent.update(agent.init(sp), batch, tp, jax.random.key(7))


@pytest.mark.parametrize("case", sorted(CASES))
def test_micro_batches_give_the_whole_batch_update(case, tiny_models,
                                                   facts_task, ragged_batch):
  """Every case once, N = 4, the reductions taken in turn."""
  reduction = losses.REDUCTIONS[sorted(CASES).index(case) % 3]
  check_update_invariance(case, reduction, (4,), tiny_models, facts_task,
                          ragged_batch)


# One case per loss family: token-level supervised, the chunked divergence,
# REINFORCE with a ratio (PPO), and the analytic and sampled GKD-RL terms.
# The weights each reduction gives a micro-batch are shared by every agent.
FAMILIES = ("supervised_kd", "gkd_chunked", "rl_ppo", "gkd_rl_analytic",
            "gkd_rl_sampled")


@pytest.mark.slow
@pytest.mark.parametrize("reduction", losses.REDUCTIONS)
@pytest.mark.parametrize("case", FAMILIES)
def test_micro_batches_give_the_whole_batch_update_for_every_reduction(
    case, reduction, tiny_models, facts_task, ragged_batch):
  check_update_invariance(case, reduction, (2,), tiny_models, facts_task,
                          ragged_batch)


def check_update_invariance(case, reduction, num_steps, tiny_models,
                            facts_task, ragged_batch):
  name, kwargs = CASES[case]
  kwargs = {**kwargs, "reduction": reduction}
  _, sp, _, _ = tiny_models
  ref_state, ref_metrics = one_update(name, kwargs, tiny_models, facts_task,
                                      ragged_batch, 1)
  moved = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(
      jax.tree.leaves(ref_state.params), jax.tree.leaves(sp)))
  assert moved > 1e-3  # the compared update is not a no-op
  for steps in num_steps:
    state, metrics = one_update(name, kwargs, tiny_models, facts_task,
                                ragged_batch, steps)
    assert float(metrics["train/skipped"]) == 0.0
    for key in ("loss/total", "train/grad_norm"):
      np.testing.assert_allclose(metrics[key], ref_metrics[key], rtol=2e-5,
                                 atol=1e-6, err_msg=f"{key}, N={steps}")
    # Adam's first step is about lr * sign(gradient): a gradient entry near
    # 0 may move by a fraction of lr = 1e-2 on float rounding alone.
    jax.tree.map(lambda a, b: np.testing.assert_allclose(
        a, b, rtol=1e-4, atol=1e-4, err_msg=f"params, N={steps}"),
                 state.params, ref_state.params)


def test_gradients_equal_the_whole_batch_gradient(tiny_models, ragged_batch):
  """The accumulated gradient itself, not only Adam's step of it."""
  student, sp, _, _ = tiny_models
  for reduction in losses.REDUCTIONS:
    loss_fn = sft.make_nll_loss(
        agents.SFTConfig(reduction=reduction), student)
    args = (sp, None, ragged_batch, None, jax.random.key(0))
    (ref_loss, _), ref_grads = jax.jit(
        jax.value_and_grad(loss_fn, has_aux=True))(*args)
    for steps in (2, 4):
      (loss, metrics), grads = jax.jit(accumulation.value_and_grad(
          loss_fn, steps, reduction))(*args)
      np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
      np.testing.assert_allclose(metrics["loss/nll"], ref_loss, rtol=1e-6)
      jax.tree.map(lambda a, b: np.testing.assert_allclose(
          a, b, rtol=1e-4, atol=2e-6), grads, ref_grads)
      # The classic bug averages the micro-batch losses (weights 1 / N);
      # on this batch the true weights are not uniform, so it would show.
      weights = accumulation.micro_batch_weights(
          ragged_batch.completion_mask, steps, reduction)
      assert np.max(np.abs(weights - 1.0 / steps)) > 0.02


def _micro(batch, steps):
  split = accumulation.split(batch, steps)
  return [jax.tree.map(lambda x, i=i: x[i], split) for i in range(steps)]


def test_micro_batches_are_strided_rows_and_merge_back():
  x = jnp.arange(16).reshape(8, 2)
  parts = accumulation.split(x, 4)
  np.testing.assert_array_equal(parts[1], x[1::4])
  np.testing.assert_array_equal(accumulation.merge(parts), x)


def test_weights_are_each_micro_batch_share_of_the_denominator():
  mask = jnp.asarray([[1, 1, 1], [0, 0, 0], [1, 0, 0], [1, 1, 0]], bool)
  # Micro-batch 0 = rows 0 and 2, micro-batch 1 = rows 1 and 3.
  np.testing.assert_allclose(
      accumulation.micro_batch_weights(mask, 2, "token"), [4 / 6, 2 / 6])
  for reduction in ("sequence", "sum"):
    np.testing.assert_allclose(
        accumulation.micro_batch_weights(mask, 2, reduction), [2 / 3, 1 / 3])
  np.testing.assert_array_equal(
      accumulation.micro_batch_weights(jnp.zeros((4, 3), bool), 2, "token"),
      [0.0, 0.0])


def test_steps_that_do_not_divide_the_rows_are_refused(tiny_models,
                                                       facts_task,
                                                       ragged_batch):
  with pytest.raises(ValueError, match=r"grad_accum_steps=3 is not allowed"
                     r"; it must divide the 8 rows"):
    one_update("sft", {}, tiny_models, facts_task, ragged_batch, 3)
  with pytest.raises(ValueError, match="grad_accum_steps=0 is not allowed"):
    agents.SFTConfig(grad_accum_steps=0)


def test_act_samples_by_micro_batches_deterministically(tiny_models,
                                                        facts_task):
  """Sampling per micro-batch: same key, same samples; N changes them."""
  student, sp, _, _ = tiny_models
  tb = next(facts_task.batches("train", 4, fixed_shape=True))
  results = {}
  for steps in (1, 2):
    config = agents.GKDConfig(max_new_tokens=6, grad_accum_steps=steps)
    agent = agents.make_agent(config, student=student,
                              teacher=tiny_models[2])
    state = agent.init(sp)
    first, _ = agent.act(state, tb, jax.random.key(3))
    again, _ = agent.act(state, tb, jax.random.key(3))
    np.testing.assert_array_equal(first.completion_tokens,
                                  again.completion_tokens)
    assert first.completion_tokens.shape == (4, 6)
    results[steps] = first
  # Micro-batch 1 (rows 1 and 3) samples with key fold_in(key, 1).
  one = results[2]
  assert not np.array_equal(one.completion_tokens,
                            results[1].completion_tokens)
  # The behaviour log-probabilities are those of the sampled tokens.
  logp = base.token_log_probs(base.completion_logits(student, sp, one),
                              one.completion_tokens)
  np.testing.assert_allclose(
      np.where(one.completion_mask, logp, 0.0), one.behaviour_logp_a,
      atol=1e-5)


def test_accumulating_updates_compile_once_per_batch_shape(tiny_models,
                                                            facts_task,
                                                            ragged_batch):
  student, sp, teacher, tp = tiny_models
  agent = agents.make_agent(
      agents.make_config("gkd", max_new_tokens=4, grad_accum_steps=2),
      student=student, teacher=teacher, tokenizer=facts_task.tokenizer)
  state = agent.init(sp)
  before = base.compile_counts().get("update", 0)
  for seed in range(3):
    state, _ = agent.update(state, ragged_batch, tp, jax.random.key(seed))
  assert base.compile_counts()["update"] - before == 1


def test_stacked_agent_accumulates_like_one_batch(tiny_models, facts_task,
                                                  ragged_batch):
  """The vmapped gkd_rl at several alphas, with micro-batches."""
  student, sp, teacher, tp = tiny_models
  results = []
  for steps in (1, 2):
    config = agents.GKDRLConfig(
        max_new_tokens=4, grad_accum_steps=steps, reduction="token",
        optimizer=agents.OptimizerConfig(learning_rate=1e-2, warmup_steps=0))
    agent = agents.make_stacked_agent(
        config, [0.0, 0.5, 1.0], student=student, teacher=teacher,
        tokenizer=facts_task.tokenizer, reward=REWARD)
    batches = jax.tree.map(lambda x: jnp.stack([x] * 3), ragged_batch)
    results.append(agent.update(agent.init(sp), batches, tp,
                                jax.random.key(0)))
  (ref_state, ref_metrics), (state, metrics) = results
  np.testing.assert_allclose(metrics["loss/total"],
                             ref_metrics["loss/total"], rtol=2e-5, atol=1e-6)
  np.testing.assert_allclose(metrics["train/grad_norm"],
                             ref_metrics["train/grad_norm"], rtol=2e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-4),
               state.params, ref_state.params)
