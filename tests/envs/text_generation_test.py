"""Tests for gkdrl.envs.text_generation."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gkdrl import envs
from gkdrl import reward_models
from gkdrl.envs import text_generation

PAD = 0
EOS = (7, 9)
T = 4
# Two left-padded prompts of lengths 2 and 3, P = 3.
PROMPT = np.array([[PAD, 3, 4], [5, 6, 2]], np.int32)
PROMPT_MASK = np.array([[0, 1, 1], [1, 1, 1]], bool)


def _reward_fn(params, inputs):
  """Depends on every valid token, so a wrong buffer gives a wrong reward."""
  tokens = jnp.concatenate([inputs.prompt_tokens, inputs.completion_tokens], 1)
  mask = jnp.concatenate([inputs.prompt_mask, inputs.completion_mask], 1)
  weights = jnp.arange(1, tokens.shape[1] + 1)
  return params["scale"] * jnp.sum(jnp.where(mask, tokens * weights, 0), 1)


REWARD_PARAMS = {"scale": 0.5}


def _reward_np(tokens, mask):
  weights = np.arange(1, tokens.shape[1] + 1)
  return 0.5 * np.sum(np.where(mask, tokens * weights, 0), axis=1)


def _env(**kwargs):
  kwargs = dict(max_new_tokens=T, eos_token_ids=EOS, pad_token_id=PAD) | kwargs
  return envs.TextGenerationEnv(**kwargs)


def _run(env, actions, step=None):
  """Resets and applies each [B] action; returns the list of timesteps."""
  step = step or env.step
  state, timestep = env.reset(jax.random.key(0), PROMPT, PROMPT_MASK,
                              REWARD_PARAMS)
  timesteps = [timestep]
  for action in actions:
    state, timestep = step(state, jnp.asarray(action, jnp.int32))
    timesteps.append(timestep)
  return state, timesteps


def test_public_names():
  for name in ("TextGenerationEnv", "EnvState", "TimeStep", "Observation"):
    assert hasattr(envs, name), name


def test_reset():
  env = _env()
  state, timestep = env.reset(jax.random.key(0), PROMPT, PROMPT_MASK)
  obs = timestep.observation
  chex.assert_shape([obs.tokens, obs.mask], (2, 3 + T))
  np.testing.assert_array_equal(obs.tokens[:, :3], PROMPT)
  np.testing.assert_array_equal(obs.tokens[:, 3:], PAD)
  np.testing.assert_array_equal(obs.mask[:, :3], PROMPT_MASK)
  assert not np.asarray(obs.mask[:, 3:]).any()
  np.testing.assert_array_equal(timestep.reward, 0.0)
  np.testing.assert_array_equal(timestep.discount, 1.0)
  assert not np.asarray(timestep.done()).any()
  assert int(state.t) == 0


def test_eos_terminates_and_finished_rows_ignore_actions():
  env = _env()
  # Row 0 emits the second EOS id at step 2; row 1 runs to the limit.
  actions = [[1, 1], [9, 2], [5, 7 + 1], [6, 3], [4, 4]]
  state, ts = _run(env, actions)
  terminated = np.array([t.terminated for t in ts[1:]])
  truncated = np.array([t.truncated for t in ts[1:]])
  np.testing.assert_array_equal(terminated[:, 0], [0, 1, 1, 1, 1])
  np.testing.assert_array_equal(truncated[:, 0], 0)
  np.testing.assert_array_equal(terminated[:, 1], 0)
  np.testing.assert_array_equal(truncated[:, 1], [0, 0, 0, 1, 1])
  # Row 0: the EOS is kept, later actions are replaced by pad.
  tokens, mask = env.completion(state)
  np.testing.assert_array_equal(tokens, [[1, 9, PAD, PAD], [1, 2, 8, 3]])
  np.testing.assert_array_equal(mask, [[1, 1, 0, 0], [1, 1, 1, 1]])
  # The buffer of row 0 no longer changes after it terminated.
  for t in ts[2:]:
    np.testing.assert_array_equal(t.observation.tokens[0],
                                  ts[2].observation.tokens[0])
  discounts = np.array([t.discount for t in ts[1:]])
  np.testing.assert_array_equal(discounts[:, 0], [1, 0, 0, 0, 0])
  np.testing.assert_array_equal(discounts[:, 1], 1)  # truncation bootstraps


def test_eos_on_last_step_is_termination_not_truncation():
  env = _env()
  _, ts = _run(env, [[1, 1], [2, 2], [3, 3], [7, 4]])
  np.testing.assert_array_equal(ts[-1].terminated, [True, False])
  np.testing.assert_array_equal(ts[-1].truncated, [False, True])


def test_positional_constructor_and_repr():
  env = envs.TextGenerationEnv(3, [4, 5], 0)
  assert (env.max_new_tokens, env.eos_token_ids, env.pad_token_id) == (
      3, (4, 5), 0)
  assert "eos_token_ids=(4, 5)" in repr(env)


def test_single_int_eos_id():
  env = _env(eos_token_ids=5)
  assert env.eos_token_ids == (5,)
  _, ts = _run(env, [[5, 7]])
  np.testing.assert_array_equal(ts[-1].terminated, [True, False])


@pytest.mark.parametrize("jit", [False, True])
def test_terminal_reward_on_finishing_step_only(jit):
  env = _env(reward_fn=_reward_fn)
  actions = [[1, 1], [9, 2], [5, 3], [6, 3], [4, 4]]
  step = jax.jit(env.step) if jit else None
  state, ts = _run(env, actions, step)
  rewards = np.array([t.reward for t in ts])  # [steps + 1, B]
  final_tokens = np.asarray(state.tokens)
  final_mask = np.asarray(state.mask)
  expected = _reward_np(final_tokens, final_mask)
  finish_step = [2, 4]  # row 0 by EOS at step 2, row 1 truncated at step 4
  for row, finish in enumerate(finish_step):
    np.testing.assert_allclose(rewards[finish, row], expected[row])
    others = np.delete(rewards[:, row], finish)
    np.testing.assert_array_equal(others, 0.0)
  # The reward at row 0's finishing step scored the finished row 0, whose
  # buffer is already final then.
  np.testing.assert_array_equal(ts[2].observation.tokens[0], final_tokens[0])


def test_reward_fn_runs_only_on_steps_where_a_row_finishes():
  calls = []

  def reward_fn(params, inputs):
    jax.debug.callback(lambda: calls.append(1))
    return _reward_fn(params, inputs)

  env = _env(reward_fn=reward_fn)
  _run(env, [[1, 1], [9, 2], [5, 3], [6, 3], [4, 4]], jax.jit(env.step))
  jax.effects_barrier()
  assert len(calls) == 2  # step 2 (row 0 terminates), step 4 (row 1 truncates)


def test_device_reward_model_plugs_in():
  """A device RewardModel's score is a reward_fn, its params a reset arg."""
  rm = reward_models.make_length_penalty(scale=0.25, unit="tokens")
  env = _env(reward_fn=rm.score)
  state, _ = env.reset(jax.random.key(0), PROMPT, PROMPT_MASK,
                       rm.init(jax.random.key(1)))
  step = jax.jit(env.step)
  rewards = []
  for action in ([1, 7], [2, 1], [3, 1], [4, 1]):
    state, timestep = step(state, jnp.array(action))
    rewards.append(timestep.reward)
  np.testing.assert_allclose(np.sum(rewards, 0), [-1.0, -0.25])
  inputs = env.reward_inputs(state)
  np.testing.assert_array_equal(inputs.prompt_tokens, PROMPT)
  np.testing.assert_array_equal(inputs.completion_mask.sum(1), [4, 1])


def test_reward_params_are_traced_not_constants():
  env = _env(reward_fn=_reward_fn)
  step = jax.jit(chex.assert_max_traces(env.step, n=1))
  results = []
  for scale in (0.5, 2.0):
    state, _ = env.reset(jax.random.key(0), PROMPT, PROMPT_MASK,
                         {"scale": jnp.float32(scale)})
    for _ in range(T):
      state, timestep = step(state, jnp.array([1, 1]))
    results.append(np.asarray(timestep.reward))
  np.testing.assert_allclose(results[1], 4 * results[0])
  assert results[0].min() > 0


def test_bad_reward_shape_is_rejected():
  env = _env(reward_fn=lambda params, inputs: jnp.zeros((3,)))
  state, _ = env.reset(jax.random.key(0), PROMPT, PROMPT_MASK)
  with pytest.raises(AssertionError):
    env.step(state, jnp.array([1, 1]))


def test_step_traces_once():
  env = _env(reward_fn=_reward_fn)
  step = jax.jit(chex.assert_max_traces(env.step, n=1))
  rng = np.random.default_rng(0)
  for key in range(2):  # new prompts and actions, same shapes
    state, _ = env.reset(jax.random.key(key), rng.integers(1, 10, (2, 3)),
                         PROMPT_MASK, {"scale": jnp.float32(key + 1)})
    for _ in range(T + 1):
      state, _ = step(state, jnp.asarray(rng.integers(0, 10, (2,))))
  assert bool(np.asarray(state.truncated | state.terminated).all())


def test_reset_and_step_vmap_over_batches():
  env = _env()
  prompts = np.stack([PROMPT, PROMPT[::-1]])
  masks = np.stack([PROMPT_MASK, PROMPT_MASK[::-1]])
  state, _ = jax.vmap(env.reset, in_axes=(None, 0, 0))(
      jax.random.key(0), prompts, masks)
  state, ts = jax.vmap(env.step)(state, jnp.array([[7, 1], [1, 9]]))
  np.testing.assert_array_equal(ts.terminated, [[True, False], [False, True]])


@pytest.mark.parametrize("kwargs, match", [
    (dict(max_new_tokens=0), "max_new_tokens"),
    (dict(max_new_tokens=2.0), "max_new_tokens"),
    (dict(max_new_tokens=True), "max_new_tokens"),
    (dict(eos_token_ids=-1), "eos_token_ids"),
    (dict(eos_token_ids=()), "eos_token_ids"),
    (dict(eos_token_ids=[1, "a"]), "eos_token_ids"),
    (dict(eos_token_ids=1.5), "eos_token_ids"),
    (dict(pad_token_id=-2), "pad_token_id"),
    (dict(pad_token_id=None), "pad_token_id"),
    (dict(reward_fn=3), "reward_fn"),
])
def test_constructor_validation(kwargs, match):
  with pytest.raises(ValueError, match=match):
    _env(**kwargs)


def test_reset_validation():
  env = _env()
  with pytest.raises(ValueError, match="prompt_tokens"):
    env.reset(jax.random.key(0), PROMPT.astype(np.float32), PROMPT_MASK)
  with pytest.raises(AssertionError):
    env.reset(jax.random.key(0), PROMPT, PROMPT_MASK[:, :2])


def test_is_eos():
  tokens = jnp.array([[7, 9, 8], [0, 7, 9]])
  np.testing.assert_array_equal(
      text_generation.is_eos(tokens, (7, 9)), np.isin(tokens, [7, 9]))
