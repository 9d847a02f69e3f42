"""Tests for gkdrl.sampling.sampler against a toy model with known logits.

The toy model (tests/sampling/toy_model.py) has the LanguageModel interface
and an explicit next-token distribution, so every property is checked
against `apply` on the full sequence and NumPy float64 references.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gkdrl import envs
from gkdrl import sampling
from gkdrl import types
from tests.sampling import logits_test
from tests.sampling import toy_model

V = 12
PAD = 0
# One big batch: the frequency tests compare N draws of the first token with
# its exact distribution (see _assert_frequencies for the bound).
N = 32768


@pytest.fixture(scope="module")
def model():
  return toy_model.make_toy_model(toy_model.ToyConfig(vocab_size=V))


@pytest.fixture(scope="module")
def params(model):
  return model.init(jax.random.key(0))


def _prompts(batch_size, prompt_length, seed=0):
  """Random left-padded prompts with 1..P valid tokens."""
  rng = np.random.default_rng(seed)
  tokens = rng.integers(1, V, (batch_size, prompt_length)).astype(np.int32)
  lengths = rng.integers(1, prompt_length + 1, batch_size)
  mask = np.arange(prompt_length)[None] >= prompt_length - lengths[:, None]
  return np.where(mask, tokens, PAD), mask


def _full_log_probs(model, params, prompt_tokens, prompt_mask, samples):
  """[B, T, V] float64 log-softmax of `apply` on prompt + completion."""
  tokens = np.concatenate([prompt_tokens, samples.tokens], axis=1)
  mask = np.concatenate([prompt_mask, samples.mask], axis=1)
  logits = model.apply(params, jnp.asarray(tokens), jnp.asarray(mask))
  p = prompt_tokens.shape[1]
  # Position P + t - 1 predicts completion token t.
  logits = np.asarray(logits, np.float64)[:, p - 1:-1]
  return logits - np.log(np.exp(logits).sum(-1, keepdims=True))


def _assert_frequencies(tokens, probs):
  """Total variation between the empirical and exact distributions.

  With N draws from p over V tokens, E|f_i - p_i| <= sqrt(p_i / N), so
  E[TV] <= 0.5 * sum_i sqrt(p_i / N) <= 0.5 * sqrt(V / N) = 0.0096 (Cauchy-
  Schwarz) for V = 12, N = 32768. TV changes by at most 1/N when one draw
  changes, so McDiarmid gives P(TV > E[TV] + eps) <= exp(-2 N eps^2) = 4e-7
  for eps = 0.015. A bound of 0.025 therefore fails a correct sampler with
  probability below 1e-6, while e.g. sampling at the wrong temperature moves
  TV far above it (checked by test_frequency_test_detects_wrong_temperature).
  """
  counts = np.bincount(np.asarray(tokens), minlength=V)
  tv = 0.5 * np.abs(counts / counts.sum() - probs).sum()
  assert tv < 0.025, (tv, counts / counts.sum(), probs)
  return tv


@pytest.fixture(scope="module")
def first_token_logits(model, params):
  prompt, mask = _prompts(1, 5, seed=2)
  return prompt, mask, np.asarray(model.apply(params, prompt, mask))[0, -1]


@pytest.mark.parametrize("temperature, top_k, top_p", [
    (1.0, 0, 1.0), (0.6, 0, 1.0), (2.0, 0, 1.0),
    (1.0, 4, 1.0), (1.0, 0, 0.8), (1.5, 5, 0.7)])
def test_first_token_frequencies(model, params, first_token_logits,
                                 temperature, top_k, top_p):
  prompt, mask, logits = first_token_logits
  samples = sampling.sample(
      model, params, jax.random.key(1), np.repeat(prompt, N, 0),
      np.repeat(mask, N, 0), max_new_tokens=1, temperature=temperature,
      top_k=top_k, top_p=top_p, eos_token_id=V - 1)
  allowed, probs = logits_test.allowed_set(
      logits, temperature=temperature, top_k=top_k, top_p=top_p)
  first = np.asarray(samples.tokens[:, 0])
  assert allowed[first].all(), "emitted a token outside the allowed set"
  if top_k or top_p < 1:
    assert not allowed.all()  # the filter is not vacuous here
  _assert_frequencies(first, probs)


def test_frequency_test_detects_wrong_temperature(first_token_logits):
  """The TV bound is tight enough to notice temperature 1 vs 0.8."""
  _, _, logits = first_token_logits
  _, p1 = logits_test.allowed_set(logits, temperature=1.0)
  _, p2 = logits_test.allowed_set(logits, temperature=0.8)
  # Empirical TV to the wrong distribution >= 0.1 - 0.025, far above 0.025.
  assert 0.5 * np.abs(p1 - p2).sum() > 0.1


@pytest.mark.parametrize("temperature, top_k, top_p", [(1.0, 3, 1.0),
                                                       (0.7, 0, 0.6)])
def test_every_token_in_allowed_set_and_logp_a(model, params, temperature,
                                               top_k, top_p):
  prompt, mask = _prompts(256, 6, seed=1)
  samples = sampling.sample(
      model, params, jax.random.key(2), prompt, mask, max_new_tokens=8,
      temperature=temperature, top_k=top_k, top_p=top_p,
      eos_token_id=[V - 1, V - 2])
  log_probs = _full_log_probs(model, params, prompt, mask, samples)
  allowed, _ = logits_test.allowed_set(log_probs, temperature=temperature,
                                       top_k=top_k, top_p=top_p)
  taken = np.asarray(samples.tokens)[..., None]
  sample_mask = np.asarray(samples.mask)
  assert sample_mask.sum() > 256 * 2  # not vacuous: several tokens per row
  in_set = np.take_along_axis(allowed, taken, -1)[..., 0]
  assert in_set[sample_mask].all()
  # logp_a is the temperature-1, unfiltered log-probability of the token.
  expected = np.take_along_axis(log_probs, taken, -1)[..., 0]
  np.testing.assert_allclose(
      np.asarray(samples.logp_a), np.where(sample_mask, expected, 0.0),
      rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("prompt_length", [1, 4])
def test_greedy_follows_argmax(model, params, prompt_length):
  prompt, mask = _prompts(32, prompt_length, seed=4)
  samples = sampling.sample(model, params, jax.random.key(0), prompt, mask,
                            max_new_tokens=6, temperature=0.0,
                            eos_token_id=V - 1)
  log_probs = _full_log_probs(model, params, prompt, mask, samples)
  sample_mask = np.asarray(samples.mask)
  np.testing.assert_array_equal(
      np.asarray(samples.tokens)[sample_mask],
      log_probs.argmax(-1)[sample_mask])


def test_eos_mask_lengths_and_flags(model, params):
  eos = (3, 5)
  prompt, mask = _prompts(512, 4, seed=5)
  env = envs.TextGenerationEnv(max_new_tokens=6, eos_token_ids=eos,
                               pad_token_id=PAD)
  actor = sampling.make_actor(model, max_new_tokens=6)
  out = jax.jit(sampling.rollout, static_argnums=(0, 1))(
      env, actor, params, jax.random.key(3), prompt, mask)
  tokens = np.asarray(out.samples.tokens)
  sample_mask = np.asarray(out.samples.mask)
  is_eos = np.isin(tokens, eos) & sample_mask
  # Reference mask: everything up to and including the first EOS.
  first_eos = np.where(is_eos.any(1), is_eos.argmax(1), 5)
  expected_mask = np.arange(6)[None] <= first_eos[:, None]
  np.testing.assert_array_equal(sample_mask, expected_mask)
  np.testing.assert_array_equal(out.samples.lengths, expected_mask.sum(1))
  np.testing.assert_array_equal(tokens[~sample_mask], PAD)
  terminated = np.asarray(out.env_state.terminated)
  truncated = np.asarray(out.env_state.truncated)
  np.testing.assert_array_equal(terminated, is_eos.any(1))
  np.testing.assert_array_equal(truncated, ~is_eos.any(1))
  # Both outcomes occur, so the checks above are not vacuous.
  assert 0 < terminated.sum() < 512
  assert set(np.unique(out.samples.lengths)) > {1, 6}


def test_stops_when_every_row_has_ended(params):
  decodes = []
  base = toy_model.make_toy_model(toy_model.ToyConfig(vocab_size=V))

  def decode(params, tokens, cache):
    jax.debug.callback(lambda: decodes.append(1))
    return base.decode(params, tokens, cache)

  model = base._replace(decode=decode)
  eos = V - 1
  # Positions >= 3 predict EOS, so it is the third generated token (the
  # prompt sits at positions 0 and 1).
  params = dict(params, pos=params["pos"].at[3:, eos].add(1e3))
  prompt = np.full((8, 2), 1, np.int32)
  samples = sampling.sample(model, params, jax.random.key(0), prompt,
                            np.ones_like(prompt, bool), max_new_tokens=20,
                            temperature=0.0, eos_token_id=eos)
  jax.effects_barrier()
  np.testing.assert_array_equal(samples.lengths, 3)
  # One decode for the last prompt token (the actor prefills the others),
  # one for each of the first two generated tokens; EOS is never decoded.
  assert len(decodes) == 3


def test_rollout_rewards(model, params):
  def reward_fn(scale, inputs):
    return scale * jnp.sum(jnp.where(inputs.completion_mask,
                                     inputs.completion_tokens, 0), 1)

  env = envs.TextGenerationEnv(max_new_tokens=5, eos_token_ids=V - 1,
                               pad_token_id=PAD, reward_fn=reward_fn)
  actor = sampling.make_actor(model, max_new_tokens=5)
  prompt, mask = _prompts(64, 3, seed=6)
  out = jax.jit(sampling.rollout, static_argnums=(0, 1))(
      env, actor, params, jax.random.key(4), prompt, mask, jnp.float32(0.5))
  tokens, completion_mask = env.completion(out.env_state)
  # Every row finishes exactly once, so its summed reward is its final score.
  np.testing.assert_allclose(
      out.rewards, 0.5 * np.where(completion_mask, tokens, 0).sum(1))
  assert np.asarray(out.samples.lengths).min() < 5  # some rows hit EOS


def test_actor_pieces_compose_into_the_sampler(model, params):
  """A hand-written Python rollout with the actor equals greedy `sample`."""
  prompt, mask = _prompts(16, 5, seed=7)
  env = envs.TextGenerationEnv(max_new_tokens=7, eos_token_ids=V - 1,
                               pad_token_id=PAD)
  actor = sampling.make_actor(
      model, max_new_tokens=7, config=sampling.SamplingConfig(temperature=0))
  env_state, timestep = env.reset(jax.random.key(0), prompt, mask)
  actor_state = actor.init(params, prompt, mask)
  while not timestep.done().all():
    action, _ = actor.select_action(jax.random.key(0), actor_state)
    env_state, timestep = env.step(env_state, action)
    token = env_state.tokens[:, 5 + env_state.t - 1]
    actor_state = actor.observe(params, actor_state, token)
  samples = sampling.sample(model, params, jax.random.key(9), prompt, mask,
                            max_new_tokens=7, temperature=0,
                            eos_token_id=V - 1, pad_token_id=PAD)
  tokens, completion_mask = env.completion(env_state)
  np.testing.assert_array_equal(samples.tokens, tokens)
  np.testing.assert_array_equal(samples.mask, completion_mask)


def test_compiles_once_per_shape(params):
  traces = []
  model = toy_model.make_toy_model(toy_model.ToyConfig(vocab_size=V),
                                   trace_counter=traces)
  kwargs = dict(max_new_tokens=4, eos_token_id=V - 1, top_k=5)
  for seed in range(3):  # new params, keys and prompts of one shape
    prompt, mask = _prompts(8, 3, seed=seed)
    new_params = jax.tree.map(lambda x: x + seed, params)
    out = sampling.sample(model, new_params, jax.random.key(seed), prompt,
                          mask, **kwargs)
  assert isinstance(out, types.Samples)
  assert len(traces) == 1
  prompt, mask = _prompts(4, 3)
  sampling.sample(model, params, jax.random.key(0), prompt, mask, **kwargs)
  assert len(traces) == 2  # a new batch size is a new shape


@pytest.mark.parametrize("kwargs, match", [
    (dict(temperature=-1.0), "temperature.*-1.0"),
    (dict(top_p=0.0), "top_p.*0.0"),
    (dict(top_p=1.01), "top_p.*1.01"),
    (dict(top_k=-3), "top_k.*-3"),
    (dict(max_new_tokens=0), "max_new_tokens.*0"),
    (dict(max_new_tokens=-5), "max_new_tokens.*-5"),
    (dict(eos_token_id=-1), "eos_token_id.*-1"),
    (dict(eos_token_id=[]), "eos_token_id"),
])
def test_argument_validation(model, params, kwargs, match):
  prompt, mask = _prompts(2, 3)
  kwargs = dict(max_new_tokens=4, eos_token_id=V - 1) | kwargs
  with pytest.raises(ValueError, match=match):
    sampling.sample(model, params, jax.random.key(0), prompt, mask, **kwargs)


def test_public_names():
  for name in ("sample", "rollout", "Rollout", "make_actor", "Actor",
               "ActorState", "SamplingConfig", "sample_token",
               "filter_logits"):
    assert hasattr(sampling, name), name
