"""Text generation as a batched, functional RL environment.

The observation is the prompt plus the tokens generated so far, the action is
the next token, an episode ends at an EOS token (terminated) or after
`max_new_tokens` actions (truncated), and an optional reward function scores
the finished sequence. The reward function has the signature of a device
`gkdrl.reward_models.RewardModel.score`, so `reward_fn=rm.score` works, and
its parameters are part of the state (an argument of `reset`), never
compile-time constants. The interface follows gymnax / jumanji:
`reset(key, ...) -> (state, timestep)` and `step(state, action) ->
(state, timestep)` are pure and jittable, and the whole state is an explicit
pytree.

Shapes (see gkdrl/types.py): B batch, P prompt length, T = max_new_tokens,
L = P + T. The token buffer is `[B, L]`: the left-padded prompt in the first P
columns, generated tokens from column P on (right-padded with the pad id).

Rows finish at different steps; the batch keeps stepping until every row has
finished. A finished row ignores further actions: its buffer no longer
changes, its reward and discount are zero, and its `terminated` /
`truncated` flags stay set.
"""

from collections.abc import Callable, Sequence
import operator
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp

from gkdrl import types
from gkdrl.reward_models import base as reward_base

Array = types.Array
# reward_fn(reward_params, inputs: RewardInputs) -> rewards [B] float32, the
# jittable `score` of a device reward model.
RewardFn = Callable[[Any, Any], Array]


def score_rewards(reward_fn: RewardFn, reward_params: Any,
          inputs: reward_base.RewardInputs) -> Array:
  """Rewards `[B]` float32 of finished sequences by a device reward.

  The one device reward pathway: the environment scores the rows that
  finish with it, and the agents score a sampled batch with it
  (`gkdrl.agents.acting.score_batch`). Jittable.

  Args:
    reward_fn: `reward_fn(reward_params, inputs) -> [B]`, e.g. a device
      `RewardModel.score`.
    reward_params: its parameters.
    inputs: the `RewardInputs` token arrays, prompts `[B, P]` and
      completions `[B, T]`.

  Returns:
    `[B]` float32 rewards.
  """
  rewards = jnp.asarray(reward_fn(reward_params, inputs), jnp.float32)
  chex.assert_shape(rewards, inputs.completion_tokens.shape[:1])  # [B]
  return rewards


class Observation(NamedTuple):
  """What the agent sees: the prompt and everything generated so far."""

  tokens: Array  # [B, L] int32, prompt then generated tokens then pad
  mask: Array  # [B, L] bool, valid prompt tokens and generated tokens


class TimeStep(NamedTuple):
  """The result of `reset` or `step` for every row of the batch.

  `terminated` and `truncated` describe each row after this step and stay set
  once a row has finished; a row finishes on the step where
  `terminated | truncated` becomes true, which is also the only step on which
  it receives a (possibly non-zero) reward.
  """

  observation: Observation
  reward: Array  # [B] float32, terminal reward on the finishing step, else 0
  discount: Array  # [B] float32, 0 once a row has terminated, else 1
  terminated: Array  # [B] bool, the row emitted an EOS token
  truncated: Array  # [B] bool, the row hit max_new_tokens without EOS

  def done(self) -> Array:
    """[B] bool: the row's episode is over (terminated or truncated)."""
    return self.terminated | self.truncated


class EnvState(NamedTuple):
  """The full environment state (a pytree; no static values inside)."""

  tokens: Array  # [B, L] int32 token buffer
  mask: Array  # [B, L] bool validity of the buffer
  t: Array  # [] int32 number of steps taken since reset
  terminated: Array  # [B] bool
  truncated: Array  # [B] bool
  reward_params: Any = None  # pytree of reward_fn's parameters (or None)


def _check_token_id(name: str, value) -> int:
  if isinstance(value, bool):
    raise ValueError(f"{name} must be a non-negative int, got {value!r}")
  try:
    value = operator.index(value)
  except TypeError:
    raise ValueError(
        f"{name} must be a non-negative int, got {value!r}") from None
  if value < 0:
    raise ValueError(f"{name} must be a non-negative int, got {value}")
  return value


def normalize_eos_token_ids(eos_token_ids: int | Sequence[int],
                            name: str = "eos_token_ids") -> tuple[int, ...]:
  """Returns EOS ids as a non-empty tuple of ints, or raises ValueError."""
  if isinstance(eos_token_ids, Sequence) and not isinstance(
      eos_token_ids, str):
    ids = tuple(_check_token_id(name, i) for i in eos_token_ids)
    if not ids:
      raise ValueError(f"{name} must name at least one token id, got "
                       f"{eos_token_ids!r}")
    return ids
  if hasattr(eos_token_ids, "shape") and getattr(eos_token_ids, "ndim", 0):
    return normalize_eos_token_ids(list(eos_token_ids), name)
  return (_check_token_id(name, eos_token_ids),)


def is_eos(tokens: Array, eos_token_ids: tuple[int, ...]) -> Array:
  """Elementwise test of `tokens` against any of several EOS ids."""
  result = jnp.zeros(tokens.shape, bool)
  for eos in eos_token_ids:  # a handful of ids: cheaper than a [.., E] isin
    result |= tokens == eos
  return result


class TextGenerationEnv:
  """Batched text generation: one token per step for every row.

  Attributes:
    max_new_tokens: T, the number of actions after which a row is truncated.
    eos_token_ids: tuple of token ids that end an episode (terminated).
    pad_token_id: token written into the buffer after a row has finished.
    reward_fn: optional jittable `reward_fn(reward_params, inputs) -> [B]`
      scoring finished sequences, where `inputs` is a
      `gkdrl.reward_models.RewardInputs` holding the token arrays (prompt
      [B, P] and completion [B, T], with masks) and `reward_params` is what
      was passed to `reset`. A device `RewardModel.score` fits as is. It
      runs inside `step` (under `lax.cond`, only on steps where some row
      finishes) and its value is delivered to the rows finishing on that
      step. Host rewards on decoded text (ROUGE, a PyTorch model, a service)
      do not belong here: roll out with `reward_fn=None` and score
      `reward_inputs(state)`, completed with the decoded text, on the host
      afterwards.
  """

  def __init__(self, max_new_tokens: int,
               eos_token_ids: int | Sequence[int], pad_token_id: int,
               reward_fn: RewardFn | None = None):
    if (isinstance(max_new_tokens, bool)
        or not isinstance(max_new_tokens, int) or max_new_tokens <= 0):
      raise ValueError(
          f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
    if reward_fn is not None and not callable(reward_fn):
      raise ValueError(f"reward_fn must be callable or None, got {reward_fn!r}")
    self.max_new_tokens = max_new_tokens
    self.eos_token_ids = normalize_eos_token_ids(eos_token_ids)
    self.pad_token_id = _check_token_id("pad_token_id", pad_token_id)
    self.reward_fn = reward_fn

  def __repr__(self) -> str:
    return (f"TextGenerationEnv(max_new_tokens={self.max_new_tokens}, "
            f"eos_token_ids={self.eos_token_ids}, "
            f"pad_token_id={self.pad_token_id}, reward_fn={self.reward_fn!r})")

  def reset(self, key: types.PRNGKey, prompt_tokens: Array,
            prompt_mask: Array,
            reward_params: Any = None) -> tuple[EnvState, TimeStep]:
    """Starts one episode per prompt.

    Args:
      key: PRNG key; unused (generation is driven by the actions), kept for
        the gymnax / jumanji interface.
      prompt_tokens: [B, P] int token ids, left-padded.
      prompt_mask: [B, P] bool (or 0/1) validity of the prompt tokens.
      reward_params: parameters passed to `reward_fn` (kept in the state).

    Returns:
      The initial state and a timestep with zero reward and no finished row.
    """
    chex.assert_rank([prompt_tokens, prompt_mask], 2)
    chex.assert_equal_shape([prompt_tokens, prompt_mask])
    if not jnp.issubdtype(prompt_tokens.dtype, jnp.integer):
      raise ValueError(
          f"prompt_tokens must hold integer token ids, got dtype "
          f"{prompt_tokens.dtype}")
    batch_size = prompt_tokens.shape[0]
    tail = (batch_size, self.max_new_tokens)
    tokens = jnp.concatenate(
        [prompt_tokens.astype(jnp.int32),
         jnp.full(tail, self.pad_token_id, jnp.int32)], axis=1)  # [B, L]
    mask = jnp.concatenate(
        [prompt_mask.astype(bool), jnp.zeros(tail, bool)], axis=1)  # [B, L]
    not_done = jnp.zeros((batch_size,), bool)
    del key
    state = EnvState(tokens=tokens, mask=mask, t=jnp.zeros((), jnp.int32),
                     terminated=not_done, truncated=not_done,
                     reward_params=reward_params)
    return state, self._timestep(state, jnp.zeros((batch_size,), jnp.float32))

  def step(self, state: EnvState,
           action: Array) -> tuple[EnvState, TimeStep]:
    """Appends one token to every unfinished row.

    Args:
      state: the current state.
      action: [B] int next token of each row; ignored for finished rows.

    Returns:
      The next state and its timestep.
    """
    chex.assert_shape(action, state.terminated.shape)
    prompt_length = state.tokens.shape[1] - self.max_new_tokens
    active = ~(state.terminated | state.truncated)  # [B]
    action = action.astype(jnp.int32)
    # Past the end every row is finished, so clamping only keeps the write in
    # bounds: the column written then is left unchanged.
    column = prompt_length + jnp.minimum(state.t, self.max_new_tokens - 1)
    old_tokens = jax.lax.dynamic_slice_in_dim(state.tokens, column, 1, axis=1)
    old_mask = jax.lax.dynamic_slice_in_dim(state.mask, column, 1, axis=1)
    new_tokens = jnp.where(active[:, None], action[:, None], old_tokens)
    new_mask = old_mask | active[:, None]
    tokens = jax.lax.dynamic_update_slice_in_dim(
        state.tokens, new_tokens, column, axis=1)  # [B, L]
    mask = jax.lax.dynamic_update_slice_in_dim(
        state.mask, new_mask, column, axis=1)  # [B, L]

    t = state.t + 1
    terminated_now = active & is_eos(action, self.eos_token_ids)  # [B]
    truncated_now = active & ~terminated_now & (t >= self.max_new_tokens)
    finished_now = terminated_now | truncated_now  # [B]
    next_state = EnvState(
        tokens=tokens, mask=mask, t=t,
        terminated=state.terminated | terminated_now,
        truncated=state.truncated | truncated_now,
        reward_params=state.reward_params)
    return next_state, self._timestep(
        next_state, self._reward(next_state, finished_now))

  def completion(self, state: EnvState) -> tuple[Array, Array]:
    """Returns the generated part of the buffer.

    Args:
      state: any state of this environment.

    Returns:
      tokens [B, T] int32 (pad after the end) and mask [B, T] bool (generated
      tokens up to and including EOS).
    """
    return (state.tokens[:, -self.max_new_tokens:],
            state.mask[:, -self.max_new_tokens:])

  def reward_inputs(self, state: EnvState):
    """The token arrays of `state` as a `reward_models.RewardInputs`."""
    completion_tokens, completion_mask = self.completion(state)
    return reward_base.RewardInputs(
        prompt_tokens=state.tokens[:, :-self.max_new_tokens],
        prompt_mask=state.mask[:, :-self.max_new_tokens],
        completion_tokens=completion_tokens, completion_mask=completion_mask)

  def _reward(self, state: EnvState, finished_now: Array) -> Array:
    zeros = jnp.zeros(finished_now.shape, jnp.float32)
    if self.reward_fn is None:
      return zeros

    def score_finished(state):
      rewards = score_rewards(self.reward_fn, state.reward_params,
                      self.reward_inputs(state))  # [B]
      return jnp.where(finished_now, rewards, 0.0)

    # Reward models can cost as much as the policy: only run one on steps
    # where some row has just finished.
    return jax.lax.cond(finished_now.any(), score_finished,
                        lambda state: zeros, state)

  def _timestep(self, state: EnvState, reward: Array) -> TimeStep:
    return TimeStep(
        observation=Observation(tokens=state.tokens, mask=state.mask),
        reward=reward,
        discount=jnp.where(state.terminated, 0.0, 1.0).astype(jnp.float32),
        terminated=state.terminated,
        truncated=state.truncated)
