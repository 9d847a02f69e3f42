"""What every agent shares: its state, its shape, and one jitted update.

An agent is `Agent(init, act, update)` (acme's split of config, acting and
learning):

    agent = make_agent(config, student=..., teacher=..., reward=..., ...)
    state = agent.init(student_params)                   # TrainingState
    batch, info = agent.act(state, task_batch, key,      # host: rollout,
                            teacher_params=...,          # host rewards
                            reward_params=...)
    state, metrics = agent.update(state, batch, teacher_params, key)  # jit

`update` is one jitted function; the student, teacher and reference
parameters are always its arguments (closed-over arrays would become
compile-time constants). It compiles once per batch shape; task batches are
bucketed, so a run compiles a handful of times.
"""

from collections.abc import Callable
import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from gkdrl import types
from gkdrl.agents import optimizer as optimizer_lib
from gkdrl.losses import _checks
from gkdrl.losses import reductions

Array = types.Array
Params = Any
COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


class TrainingState(NamedTuple):
  """The learner's state (a pytree; nothing static inside)."""

  params: Params  # student parameters, float32
  opt_state: optax.OptState  # optimizer state of `params`
  step: Array  # [] int32, number of updates applied
  ref_params: Params | None = None  # frozen initial student (KL reference)


@dataclasses.dataclass(frozen=True, kw_only=True)
class AgentConfig:
  """Settings every agent has.

  Attributes:
    optimizer: the optax optimiser settings.
    max_new_tokens: T, the most tokens sampled per completion, >= 1.
    sample_temperature: temperature of rollouts (paper: 1.0 in training);
      0 is greedy.
    top_k: keep the k most likely tokens when sampling; 0 disables.
    top_p: nucleus mass when sampling, (0, 1].
    reduction: "sequence" (paper Eq. 2), "token" or "sum".
    compute_dtype: "float32" or "bfloat16" for the forward passes;
      parameters, optimizer state and every divergence stay float32.
  """

  optimizer: optimizer_lib.OptimizerConfig = dataclasses.field(
      default_factory=optimizer_lib.OptimizerConfig)
  max_new_tokens: int = 32
  sample_temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0
  reduction: str = "sequence"
  compute_dtype: str = "float32"

  def __post_init__(self):
    if (isinstance(self.max_new_tokens, bool)
        or not isinstance(self.max_new_tokens, int)
        or self.max_new_tokens < 1):
      raise ValueError(
          f"max_new_tokens={self.max_new_tokens!r} must be an int >= 1.")
    _checks.check_non_negative("sample_temperature", self.sample_temperature)
    if not isinstance(self.top_k, int) or self.top_k < 0:
      raise ValueError(f"top_k={self.top_k!r} must be an int >= 0.")
    if not 0.0 < self.top_p <= 1.0:
      raise ValueError(f"top_p={self.top_p!r} is outside the range (0, 1].")
    _checks.check_choice("reduction", self.reduction, reductions.REDUCTIONS)
    _checks.check_choice("compute_dtype", self.compute_dtype, COMPUTE_DTYPES)


class Agent(NamedTuple):
  """An agent as pure functions. See the module docstring.

  Attributes:
    name: the agent's registry name.
    config: its frozen config.
    init: `init(student_params) -> TrainingState`.
    act: `act(state, task_batch, key, *, teacher_params=None,
      reward_params=None) -> (Batch, info)`: builds the training batch on
      the host (dataset targets, teacher or student samples, host rewards);
      `info` holds host-side metrics.
    update: `update(state, batch, teacher_params, key) -> (state, metrics)`,
      jitted.
    uses_teacher: whether `update` or `act` reads the teacher.
    uses_reward: whether `act` calls the reward model.
  """

  name: str
  config: AgentConfig
  init: Callable[[Params], TrainingState]
  act: Callable[..., tuple[types.Batch, dict[str, float]]]
  update: Callable[..., tuple[TrainingState, types.Metrics]]
  uses_teacher: bool
  uses_reward: bool


def cast_params(params: Params, compute_dtype: str) -> Params:
  """Casts floating parameters to the compute dtype (float32 masters)."""
  dtype = COMPUTE_DTYPES[compute_dtype]
  if dtype == jnp.float32:
    return params
  return jax.tree.map(
      lambda p: p.astype(dtype) if jnp.issubdtype(p.dtype, jnp.floating)
      else p, params)


def completion_hidden(model, params: Params, batch: types.Batch) -> Array:
  """Final hidden states `[B, T, D]` at the positions predicting completions.

  The model reads the left-padded prompt followed by the right-padded
  completion; the hidden state at position P - 1 + t predicts completion
  token t.
  """
  prompt_len = batch.prompt_tokens.shape[1]
  completion_len = batch.completion_tokens.shape[1]
  tokens = jnp.concatenate(
      [batch.prompt_tokens, batch.completion_tokens], axis=1)  # [B, L]
  mask = jnp.concatenate(
      [batch.prompt_mask, batch.completion_mask], axis=1)  # [B, L]
  hidden = model.hidden(params, tokens, mask)  # [B, L, D]
  return hidden[:, prompt_len - 1:prompt_len - 1 + completion_len]


def completion_logits(model, params: Params, batch: types.Batch) -> Array:
  """Logits `[B, T, V]` (float32) predicting each completion token.

  Only the T completion-predicting hidden states are unembedded, so no
  `[B, L, V]` array is built for the prompt positions.
  """
  hidden = completion_hidden(model, params, batch)  # [B, T, D]
  unembedding = model.unembedding(params)  # [D, V]
  return jnp.einsum("btd,dv->btv", hidden, unembedding,
                    preferred_element_type=jnp.float32)  # [B, T, V]


def token_log_probs(logits: Array, tokens: Array) -> Array:
  """log softmax(logits)[tokens]: `[B, T, V]`, `[B, T]` -> `[B, T]`."""
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return jnp.take_along_axis(log_probs, tokens[..., None], axis=-1)[..., 0]


LossFn = Callable[[Params, TrainingState, types.Batch, Params, Array],
                  tuple[Array, types.Metrics]]


def make_init(optimizer: optax.GradientTransformation, *,
              keep_reference: bool) -> Callable[[Params], TrainingState]:
  """`init(student_params) -> TrainingState`."""

  def init(params: Params) -> TrainingState:
    params = jax.tree.map(jnp.asarray, params)
    ref = jax.tree.map(jnp.copy, params) if keep_reference else None
    return TrainingState(params=params, opt_state=optimizer.init(params),
                         step=jnp.zeros((), jnp.int32), ref_params=ref)

  return init


def make_update(loss_fn: LossFn, optimizer: optax.GradientTransformation, *,
                epochs: int = 1) -> Callable[..., tuple[TrainingState,
                                                        types.Metrics]]:
  """One jitted update: `epochs` gradient steps of `loss_fn` on one batch.

  A step whose loss or gradient is not finite leaves the state unchanged and
  reports `train/skipped = 1`, so one bad batch cannot poison the
  parameters; the runner stops on a non-finite loss.
  """

  def one_step(state: TrainingState, batch, teacher_params, key):
    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params, state, batch, teacher_params, key)
    updates, opt_state = optimizer.update(grads, state.opt_state,
                                          state.params)
    params = optax.apply_updates(state.params, updates)
    grad_norm = optax.global_norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    keep = lambda new, old: jax.tree.map(
        lambda n, o: jnp.where(finite, n, o), new, old)
    new_state = state._replace(
        params=keep(params, state.params),
        opt_state=keep(opt_state, state.opt_state),
        step=state.step + finite.astype(jnp.int32))
    metrics = dict(metrics)
    metrics["loss/total"] = loss
    metrics["train/grad_norm"] = grad_norm
    metrics["train/skipped"] = 1.0 - finite.astype(jnp.float32)
    return new_state, metrics

  @jax.jit
  def update(state: TrainingState, batch: types.Batch, teacher_params,
             key: Array) -> tuple[TrainingState, types.Metrics]:
    if epochs == 1:
      return one_step(state, batch, teacher_params, key)

    def body(carry, epoch_key):
      new_state, metrics = one_step(carry, batch, teacher_params, epoch_key)
      return new_state, metrics

    state, metrics = jax.lax.scan(body, state, jax.random.split(key, epochs))
    # Report the first epoch (the on-policy one) and the last.
    first = {k: v[0] for k, v in metrics.items()}
    first.update({f"{k}_last_epoch": v[-1] for k, v in metrics.items()
                  if k.startswith("loss/")})
    return state, first

  return update
