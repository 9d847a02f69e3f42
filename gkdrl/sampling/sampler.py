"""Batched generation: a rollout of `TextGenerationEnv` by a model's actor.

The prompt is prefilled in one forward pass, then each new token costs one
cached decode step inside a `lax.while_loop` that stops as soon as every row
has ended (EOS or the length limit). There is no Python loop per token, and
`sample` compiles once per (model, B, P, max_new_tokens, sampling settings).
An encoder-decoder model (T5) encodes the prompt once, keeps its
cross-attention keys/values in the cache and decodes from its start token,
in the same loop (see gkdrl/sampling/actor.py).
"""

from collections.abc import Sequence
import functools
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp

from gkdrl import types
from gkdrl.envs import text_generation
from gkdrl.sampling import actor as actor_lib
from gkdrl.sampling import logits as logits_lib

Array = types.Array


class Rollout(NamedTuple):
  """Everything a rollout produced."""

  samples: types.Samples  # tokens, logp_a, mask [B, T], lengths [B]
  rewards: Array  # [B] float32, sum of the environment's rewards
  # The final state (full buffer), without reward_params: returning those
  # from a jitted rollout would copy every reward-model weight.
  env_state: text_generation.EnvState


def rollout(env: text_generation.TextGenerationEnv, actor: actor_lib.Actor,
            params: Any, key: types.PRNGKey, prompt_tokens: Array,
            prompt_mask: Array, reward_params: Any = None) -> Rollout:
  """Generates completions by running `actor` in `env` until all rows end.

  Jittable (jit it at the outer level, with `params` an argument).

  Args:
    env: the environment; its reward function, if any, scores finished rows.
    actor: the policy, built for `env.max_new_tokens`.
    params: the model parameters.
    key: PRNG key.
    prompt_tokens: [B, P] int token ids, left-padded, at least one valid
      token per row.
    prompt_mask: [B, P] bool validity of the prompt tokens.
    reward_params: parameters of the environment's reward function.

  Returns:
    The samples, the summed rewards and the final environment state.
  """
  chex.assert_rank([prompt_tokens, prompt_mask], 2)
  batch_size, prompt_length = prompt_tokens.shape
  max_new_tokens = env.max_new_tokens
  reset_key, key = jax.random.split(key)
  env_state, _ = env.reset(reset_key, prompt_tokens, prompt_mask,
                           reward_params)
  actor_state = actor.init(params, prompt_tokens, prompt_mask)
  # Once, outside the loop: e.g. per-layer weights for the model's decode.
  decode_params = actor.prepare(params)
  logp_a = jnp.zeros((batch_size, max_new_tokens), jnp.float32)  # [B, T]

  def act(env_state, actor_state, key, logp_a, rewards):
    key, action_key = jax.random.split(key)
    action, action_logp = actor.select_action(action_key, actor_state)
    logp_a = jax.lax.dynamic_update_slice_in_dim(
        logp_a, action_logp[:, None], env_state.t, axis=1)
    env_state, timestep = env.step(env_state, action)
    return env_state, key, logp_a, rewards + timestep.reward

  # The first token comes from the prefill logits; every later one needs a
  # decode step of the token before it. Decoding at the top of the loop body
  # skips the useless decode of the very last token.
  env_state, key, logp_a, rewards = act(
      env_state, actor_state, key, logp_a, jnp.zeros((batch_size,)))

  def not_done(carry):
    env_state = carry[0]
    return ~jnp.all(env_state.terminated | env_state.truncated)

  def body(carry):
    env_state, actor_state, key, logp_a, rewards = carry
    # The token the environment accepted (pad for finished rows).
    token = jax.lax.dynamic_index_in_dim(
        env_state.tokens, prompt_length + env_state.t - 1, axis=1,
        keepdims=False)  # [B]
    actor_state = actor.observe(decode_params, actor_state, token)
    env_state, key, logp_a, rewards = act(
        env_state, actor_state, key, logp_a, rewards)
    return env_state, actor_state, key, logp_a, rewards

  env_state, _, _, logp_a, rewards = jax.lax.while_loop(
      not_done, body, (env_state, actor_state, key, logp_a, rewards))
  tokens, mask = env.completion(env_state)  # [B, T]
  samples = types.Samples(
      tokens=tokens,
      logp_a=jnp.where(mask, logp_a, 0.0),
      mask=mask,
      lengths=mask.sum(axis=-1, dtype=jnp.int32))
  return Rollout(samples=samples, rewards=rewards,
                 env_state=env_state._replace(reward_params=None))


@functools.partial(
    jax.jit,
    static_argnames=("model", "max_new_tokens", "config", "eos_token_ids",
                     "pad_token_id", "cache_dtype"))
def _sample(model, params, key, prompt_tokens, prompt_mask, *, max_new_tokens,
            config, eos_token_ids, pad_token_id, cache_dtype):
  env = text_generation.TextGenerationEnv(
      max_new_tokens=max_new_tokens, eos_token_ids=eos_token_ids,
      pad_token_id=pad_token_id)
  actor = actor_lib.make_actor(model, max_new_tokens=max_new_tokens,
                               config=config, cache_dtype=cache_dtype)
  return rollout(env, actor, params, key, prompt_tokens,
                 prompt_mask).samples


def sample(model, params: Any, key: types.PRNGKey, prompt_tokens: Array,
           prompt_mask: Array, *, max_new_tokens: int,
           temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
           eos_token_id: int | Sequence[int],
           pad_token_id: int | None = None,
           cache_dtype=None) -> types.Samples:
  """Samples completions of a batch of prompts from a language model.

  Compiled once per model object, prompt shape [B, P], max_new_tokens and
  sampling settings; `params`, `key` and the prompts are traced arguments,
  so new parameters or new prompts of the same shape reuse the compilation.
  `networks.make_model` (and `from_pretrained`) give one object per
  configuration, so a model loaded again reuses it too.

  Args:
    model: a `gkdrl.networks.LanguageModel`, or an `EncoderDecoderModel`
      (T5) whose encoder reads the prompt and whose decoder starts from
      `config.decoder_start_token_id`; pass the same object each call (it is
      a static argument of the compiled function).
    params: its parameters.
    key: PRNG key.
    prompt_tokens: [B, P] int token ids, left-padded (either side for an
      encoder-decoder), at least one valid token per row.
    prompt_mask: [B, P] bool validity of the prompt tokens.
    max_new_tokens: T, the most tokens generated per row.
    temperature: sampling temperature; 0 is greedy decoding.
    top_k: keep the k most likely tokens; 0 disables.
    top_p: nucleus mass in (0, 1]; 1 disables.
    eos_token_id: id, or sequence of ids, that end a completion.
    pad_token_id: id written after the end of a completion; None uses the
      model config's pad id, else the first EOS id.
    cache_dtype: dtype of the KV cache; None uses the parameters' dtype.

  Returns:
    `Samples`: tokens [B, T] (pad after the end), logp_a [B, T] (log-prob of
    each token at temperature 1, 0 outside the mask), mask [B, T] (generated
    tokens up to and including EOS) and lengths [B].
  """
  if (isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int)
      or max_new_tokens <= 0):
    raise ValueError(
        f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
  config = logits_lib.SamplingConfig(temperature=temperature, top_k=top_k,
                                     top_p=top_p)
  eos_token_ids = text_generation.normalize_eos_token_ids(
      eos_token_id, name="eos_token_id")
  if pad_token_id is None:
    pad_token_id = getattr(getattr(model, "config", None), "pad_token_id",
                           None)
  if pad_token_id is None:
    pad_token_id = eos_token_ids[0]
  if cache_dtype is not None:
    cache_dtype = jnp.dtype(cache_dtype)
  return _sample(model, params, key, jnp.asarray(prompt_tokens),
                 jnp.asarray(prompt_mask), max_new_tokens=max_new_tokens,
                 config=config, eos_token_ids=eos_token_ids,
                 pad_token_id=pad_token_id, cache_dtype=cache_dtype)
