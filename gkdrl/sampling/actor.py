"""A language model as an actor in `TextGenerationEnv`.

The actor's recurrent state is the model's KV cache plus the logits of the
next token. `init` prefills the prompt in one forward pass, `select_action`
draws a token from those logits, and `observe` feeds the token the
environment accepted through one cached decode step. Agents that roll out the
environment themselves compose these functions; `sampling.rollout` does it
inside a `lax.while_loop`.

    actor = make_actor(model, max_new_tokens=T, config=SamplingConfig())
    state = actor.init(params, prompt_tokens, prompt_mask)   # prefill
    fast = actor.prepare(params)                              # once
    action, logp_a = actor.select_action(key, state)          # sample
    state = actor.observe(fast, state, token)                 # decode

`prepare` gives the parameters in the form the model decodes fastest
(`LanguageModel.prepare_decode` or `EncoderDecoderModel.prepare_decode`:
per-layer weights, which a loop over tokens must not recompute every step);
`observe` also accepts the plain parameters.

An encoder-decoder model (`model.is_encoder_decoder`, e.g. T5) reads the
prompt as its source: `init` encodes it once, keeps the cross-attention keys
and values in the cache and prefills the decoder start token
(`config.decoder_start_token_id`); `observe` is the same decode step.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gkdrl import types
from gkdrl.sampling import logits as logits_lib

Array = types.Array
Params = Any


class ActorState(NamedTuple):
  """The actor's recurrent state (a pytree)."""

  cache: Any  # the model's KVCache holding every token fed so far
  logits: Array  # [B, V] float32 logits of the next token


class Actor(NamedTuple):
  """Pure functions of a sampling policy; all jittable.

  Attributes:
    init: `init(params, prompt_tokens [B, P], prompt_mask [B, P]) ->
      ActorState`, prefills the prompt (left-padded, at least one valid
      token per row) into a fresh cache with room for `max_new_tokens` more
      tokens.
    select_action: `select_action(key, state) -> (action [B] int32, logp_a [B]
      float32)`, draws the next token and reports its log-probability at
      temperature 1.
    observe: `observe(params, state, token [B]) -> ActorState`, appends one
      token per row (the token the environment accepted, pad for finished
      rows) with one cached decode step; `params` are the parameters or
      `prepare(params)`.
    prepare: `prepare(params) -> params for observe`, computed once before
      a loop of `observe` calls (the identity for models without
      `prepare_decode`).
  """

  init: Callable[[Params, Array, Array], ActorState]
  select_action: Callable[[types.PRNGKey, ActorState], tuple[Array, Array]]
  observe: Callable[[Params, ActorState, Array], ActorState]
  prepare: Callable[[Params], Params] = lambda params: params


def _floating_dtype(params: Params):
  for leaf in jax.tree.leaves(params):
    if jnp.issubdtype(leaf.dtype, jnp.floating):
      return leaf.dtype
  return jnp.float32


def make_actor(model, *, max_new_tokens: int,
               config: logits_lib.SamplingConfig = logits_lib.SamplingConfig(),
               cache_dtype=None) -> Actor:
  """Builds the actor of a language model.

  Args:
    model: a `gkdrl.networks.LanguageModel` (anything with `init_cache`,
      `prefill` and `decode`) or `EncoderDecoderModel`.
    max_new_tokens: T, how many tokens will be fed after the prompt; sets the
      cache size to P + T (T + 1 decoder slots for an encoder-decoder).
    config: temperature, top-k and top-p of `select_action`.
    cache_dtype: dtype of the cached keys and values; None uses the dtype of
      the parameters' first floating-point leaf.

  Returns:
    The actor's `init`, `select_action` and `observe`.
  """
  if (isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int)
      or max_new_tokens <= 0):
    raise ValueError(
        f"max_new_tokens must be a positive int, got {max_new_tokens!r}")

  def init(params, prompt_tokens, prompt_mask):
    batch_size, prompt_length = prompt_tokens.shape
    dtype = _floating_dtype(params) if cache_dtype is None else cache_dtype
    cache = model.init_cache(batch_size, prompt_length + max_new_tokens,
                             dtype=dtype)
    prompt_tokens = prompt_tokens.astype(jnp.int32)
    # Only the last position's logits are needed. Prefilling all but the last
    # column leaves prefill's logits unused, so XLA drops their [B, P, V]
    # projection (a quarter of the prefill FLOPs for a 50k vocabulary), and
    # the last column, a real token in every row thanks to left padding, goes
    # through one decode step.
    if prompt_length > 1:
      _, cache = model.prefill(params, prompt_tokens[:, :-1],
                               prompt_mask[:, :-1].astype(bool), cache)
    logits, cache = model.decode(params, prompt_tokens[:, -1], cache)
    # Per-layer cache arrays, which `observe` updates in place.
    unstack = getattr(model, "unstack_cache", None)
    if unstack is not None:
      cache = unstack(cache)
    return ActorState(cache=cache, logits=logits.astype(jnp.float32))

  def init_encoder_decoder(params, prompt_tokens, prompt_mask):
    batch_size, prompt_length = prompt_tokens.shape
    dtype = _floating_dtype(params) if cache_dtype is None else cache_dtype
    cache = model.init_cache(batch_size, max_new_tokens + 1, prompt_length,
                             dtype=dtype)
    start = jnp.full((batch_size, 1), model.config.decoder_start_token_id,
                     jnp.int32)
    logits, cache = model.prefill(params, prompt_tokens.astype(jnp.int32),
                                  prompt_mask.astype(bool), start, None,
                                  cache)
    # Per-layer cache arrays, which `observe` updates in place.
    unstack = getattr(model, "unstack_cache", None)
    if unstack is not None:
      cache = unstack(cache)
    return ActorState(cache=cache, logits=logits[:, 0].astype(jnp.float32))

  if getattr(model, "is_encoder_decoder", False):
    init = init_encoder_decoder

  def select_action(key, state):
    return logits_lib.sample_token(key, state.logits, config)

  def observe(params, state, token):
    logits, cache = model.decode(params, token.astype(jnp.int32), state.cache)
    return ActorState(cache=cache, logits=logits.astype(jnp.float32))

  prepare = getattr(model, "prepare_decode", None) or (lambda params: params)
  return Actor(init=init, select_action=select_action, observe=observe,
               prepare=prepare)
