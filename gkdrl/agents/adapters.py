"""Training low-rank adapters on a frozen student (`lora_rank` > 0).

`assemble` (gkdrl/agents/registry.py) turns any agent into its LoRA form
with `init`, `loss` and `act` from here, so every agent supports it:

    state.params   the adapters, {module: {"a", "b"}}: the only
                   differentiated and optimised parameters
    state.frozen   the base student, in `lora_base_dtype`
    agent.model_params(state)   base merged with the adapters

The loss runs the agent's own loss on `lora.merge(frozen, adapters)`, so
gradients reach the adapters only and the optimizer keeps moments of the
adapters only. The merged weights are rebuilt inside each update (see
`gkdrl.networks.lora` for the cost). The initial student, the KL reference
of the RL agents, is the frozen base itself: no copy is kept.
"""

import functools

import jax
import jax.numpy as jnp
import optax

from gkdrl.agents import base
from gkdrl.networks import lora


def merge_fn(config: base.AgentConfig):
  """`merge(base_params, adapters) -> params` in the adapters' dtype."""
  return functools.partial(lora.merge, alpha=config.lora_alpha,
                           rank=config.lora_rank)


def make_model_params(config: base.AgentConfig):
  """`model_params(state)`: the merged student, jitted."""
  merge = jax.jit(merge_fn(config))
  return lambda state: merge(state.frozen, state.params)


def make_init(config: base.AgentConfig,
              optimizer: optax.GradientTransformation):
  """`init(student_params, key=None) -> TrainingState` with adapters.

  `key` draws the adapters' `a` matrices (default `jax.random.key(0)`);
  their `b` matrices are zero, so the initial model is the base.
  """

  def init(params, key=None) -> base.TrainingState:
    key = jax.random.key(0) if key is None else key
    frozen = base.cast_params(
        jax.tree.map(lambda p: jnp.array(p, copy=True), params),
        config.lora_base_dtype)
    adapters = lora.init_adapters(
        key, params, rank=config.lora_rank, targets=config.lora_targets,
        dtype=base.PARAM_DTYPES[config.param_dtype])
    return base.TrainingState(
        params=adapters, opt_state=optimizer.init(adapters),
        step=jnp.zeros((), jnp.int32), frozen=frozen)

  return init


def wrap_loss(config: base.AgentConfig, loss_fn: base.LossFn, *,
              keep_reference: bool) -> base.LossFn:
  """The agent's loss of the merged student, a function of the adapters."""
  merge = merge_fn(config)

  def loss(adapters, state, batch, teacher_params, key):
    if keep_reference:
      state = state._replace(ref_params=state.frozen)
    return loss_fn(merge(state.frozen, adapters), state, batch,
                   teacher_params, key)

  return loss


def wrap_act(act, model_params):
  """`act` on a state whose `params` are the merged student."""

  def lora_act(state, task_batch, key, **kwargs):
    merged = state._replace(params=model_params(state))
    return act(merged, task_batch, key, **kwargs)

  return lora_act
