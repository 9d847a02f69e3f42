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
bucketed, so a run compiles a handful of times. Each compile is logged
("compiling update for shapes ...") and counted (`compile_counts`).

`update` donates the state it is given: its buffers are reused for the new
state, so the old `TrainingState` is deleted after the call. Keep only the
returned state (copy the old one first, `jax.tree.map(jnp.copy, state)`,
where it is still needed). `init` copies the parameters it is given, so the
caller's arrays are never donated.
"""

import collections
from collections.abc import Callable
import dataclasses
from typing import Any, NamedTuple

from absl import logging
import jax
import jax.numpy as jnp
import optax

from gkdrl import types
from gkdrl.agents import accumulation
from gkdrl.agents import optimizer as optimizer_lib
from gkdrl.agents import rollout_config
from gkdrl import validation
from gkdrl.losses import reductions
from gkdrl.networks import layers
from gkdrl.networks import lora
from gkdrl.networks import model as model_lib

Array = types.Array
Params = Any
COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
PARAM_DTYPES = COMPUTE_DTYPES

# Traces of each named jitted function since the process started.
_COMPILES: collections.Counter[str] = collections.Counter()


def log_compile(name: str, **arrays) -> None:
  """Counts and logs one compile of the jitted function `name`.

  Call it inside the function's Python body: that body runs once per trace,
  and jit traces exactly when it misses its cache and compiles.

  Args:
    name: the function's name in the log line and in `compile_counts`.
    **arrays: the inputs whose shapes decide the compile (pytrees; None
      leaves are skipped).
  """
  _COMPILES[name] += 1
  shapes = ", ".join(
      f"{arg}{jax.tree_util.keystr(path)}={leaf.dtype}{list(leaf.shape)}"
      for arg, value in arrays.items()
      for path, leaf in jax.tree_util.tree_leaves_with_path(value))
  logging.info("compiling %s for shapes %s", name, shapes)


def compile_counts() -> dict[str, int]:
  """{name: compiles so far} of the functions that call `log_compile`."""
  return dict(_COMPILES)


class TrainingState(NamedTuple):
  """The learner's state (a pytree; nothing static inside)."""

  params: Params  # student parameters, float32 or `param_dtype`
  opt_state: optax.OptState  # optimizer state of `params`
  step: Array  # [] int32, number of updates applied
  ref_params: Params | None = None  # frozen initial student (KL reference)
  alpha: Array | None = None  # [] float32 gkd_rl teacher weight, when scheduled
  # LoRA (`lora_rank` > 0): the frozen base model, in `lora_base_dtype`;
  # `params` then holds the adapters (`gkdrl.networks.lora`).
  frozen: Params | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class AgentConfig(metaclass=rollout_config.TakesRolloutKeywords):
  """Settings every agent has.

  The rollout settings may also be given and read flat:
  `SFTConfig(max_new_tokens=8).max_new_tokens == 8`.

  Attributes:
    optimizer: the optax optimiser settings.
    rollout: how completions are sampled (T, temperature, top-k, top-p).
    reduction: "sequence" (paper Eq. 2), "token" or "sum".
    compute_dtype: "float32" or "bfloat16" for the forward passes;
      every softmax and divergence stays float32.
    param_dtype: "float32" or "bfloat16": the dtype the student parameters
      (and so the optimizer state and the gradients) are stored in.
      bfloat16 halves their memory but rounds every update to 8 bits of
      mantissa, so small learning rates may stall.
    remat: rematerialisation of the student's layers in the update's
      backward pass, one of `gkdrl.networks.model.REMAT_MODES`: "none"
      (keep every layer's activations), "dots" (keep the weight
      projections' outputs, recompute attention) or "full" (keep each
      layer's input, recompute the layer). Same gradients; less memory for
      more compute. Sampling and the teacher are unaffected.
    grad_accum_steps: N, micro-batches per batch, >= 1: sampling, the
      teacher's forward pass, the loss and its gradient run on B / N rows at
      a time, and one optimiser step follows, normalised by the whole batch
      (`gkdrl.agents.accumulation`), so the update is the one-big-batch
      update. N must divide the rows of a batch (batch_size *
      samples_per_prompt). Samples depend on N (each micro-batch samples
      with its own key); with the same samples the update does not.
    lora_rank: r of low-rank adapters trained on a frozen student
      (`gkdrl.networks.lora`), >= 0; 0 trains every parameter.
    lora_alpha: LoRA alpha, > 0; the adapters' update is scaled by
      lora_alpha / lora_rank.
    lora_targets: the projections that get adapters: query, key, value,
      out (attention), gate, up, down (MLP).
    lora_base_dtype: "float32" or "bfloat16": the dtype the frozen base
      is stored in with LoRA.
  """

  optimizer: optimizer_lib.OptimizerConfig = dataclasses.field(
      default_factory=optimizer_lib.OptimizerConfig)
  rollout: rollout_config.RolloutConfig = dataclasses.field(
      default_factory=rollout_config.RolloutConfig)
  reduction: str = "sequence"
  compute_dtype: str = "float32"
  param_dtype: str = "float32"
  remat: str = "none"
  grad_accum_steps: int = 1
  lora_rank: int = 0
  lora_alpha: float = 16.0
  lora_targets: tuple[str, ...] = lora.DEFAULT_TARGETS
  lora_base_dtype: str = "float32"

  def __post_init__(self):
    validation.check_choice("reduction", self.reduction, reductions.REDUCTIONS)
    validation.check_choice("compute_dtype", self.compute_dtype, COMPUTE_DTYPES)
    validation.check_choice("param_dtype", self.param_dtype, PARAM_DTYPES)
    validation.check_choice("remat", self.remat, model_lib.REMAT_MODES)
    validation.check_int("grad_accum_steps", self.grad_accum_steps, 1)
    validation.check_int("lora_rank", self.lora_rank, 0)
    validation.check_positive("lora_alpha", self.lora_alpha)
    object.__setattr__(self, "lora_targets",
                       lora.check_targets(self.lora_targets))
    validation.check_choice("lora_base_dtype", self.lora_base_dtype,
                            PARAM_DTYPES)

  def unread_settings(self) -> dict[str, str]:
    """{field: why} for the fields this agent's training never reads.

    The runners reject a flag set for one of them (a sweep that sets it
    would otherwise silently train something else). Agents override this.
    """
    return {}

  max_new_tokens = property(lambda self: self.rollout.max_new_tokens,
                            doc="`rollout.max_new_tokens`.")
  sample_temperature = property(
      lambda self: self.rollout.sample_temperature,
      doc="`rollout.sample_temperature`.")
  top_k = property(lambda self: self.rollout.top_k, doc="`rollout.top_k`.")
  top_p = property(lambda self: self.rollout.top_p, doc="`rollout.top_p`.")


class Agent(NamedTuple):
  """An agent as pure functions. See the module docstring.

  Attributes:
    name: the agent's registry name.
    config: its frozen config.
    init: `init(student_params) -> TrainingState`.
    act: `act(state, task_batch, key, *, teacher_params=None,
      reward_params=None) -> (Batch, info)`: builds the training batch on
      the host (dataset targets, teacher or student samples, host rewards);
      `info` holds its metrics, floats or device scalars (read when logged).
    update: `update(state, batch, teacher_params, key) -> (state, metrics)`,
      jitted.
    uses_teacher: whether `update` or `act` reads the teacher.
    uses_reward: whether `act` calls the reward model.
    model_params: `model_params(state) -> params` for the student model
      (sampling, evaluation, export): `state.params`, or with LoRA the
      base merged with the adapters.
  """

  name: str
  config: AgentConfig
  init: Callable[[Params], TrainingState]
  act: Callable[..., tuple[types.Batch, dict[str, float]]]
  update: Callable[..., tuple[TrainingState, types.Metrics]]
  uses_teacher: bool
  uses_reward: bool
  model_params: Callable[[TrainingState], Params] = (
      lambda state: state.params)


def cast_params(params: Params, compute_dtype: str) -> Params:
  """Casts floating parameters to `compute_dtype` (a name of COMPUTE_DTYPES).

  A no-op on leaves already of that dtype and on integer leaves.
  """
  dtype = COMPUTE_DTYPES[compute_dtype]
  return jax.tree.map(
      lambda p: p.astype(dtype) if (jnp.issubdtype(p.dtype, jnp.floating)
                                    and p.dtype != dtype) else p, params)


def completion_hidden(model, params: Params, batch: types.Batch, *,
                      remat: str = "none", unroll: bool = False) -> Array:
  """Final hidden states `[B, T, D]` at the positions predicting completions.

  The one place where the two model kinds differ in an update:

  - decoder-only (`LanguageModel`): the model reads the left-padded prompt
    followed by the right-padded completion; the hidden state at position
    P - 1 + t predicts completion token t. The completion's last token is
    not read (it predicts nothing), and unless a remat mode is set the
    last layer runs at the T positions alone (`hidden(..., last=T)`): the
    prompt's rows of that layer feed nothing the loss reads.
  - encoder-decoder (`model.is_encoder_decoder`): the prompt is the encoder
    input and the decoder reads [decoder start, completion[:-1]] (teacher
    forcing); its hidden state t predicts completion token t. The encoder is
    part of the forward pass, so it is differentiated too.

  `remat` (a `REMAT_MODES` name) goes to `model.hidden`: what a backward
  pass through this call stores per layer; so does `unroll`: the layers
  run unrolled rather than in a scan (`student_unroll`).
  """
  if model.is_encoder_decoder:
    tokens, mask = teacher_forcing_inputs(model, batch)  # [B, T]
    return model.hidden(params, batch.prompt_tokens, batch.prompt_mask,
                        tokens, mask, remat=remat, unroll=unroll)  # [B, T, D]
  completion_len = batch.completion_tokens.shape[1]
  # The last completion token predicts nothing: it is left out, and the
  # positions wanted are then the last T (`last`: the model's last layer
  # works on those alone, unless remat).
  tokens = jnp.concatenate(
      [batch.prompt_tokens, batch.completion_tokens[:, :-1]], axis=1)
  mask = jnp.concatenate(
      [batch.prompt_mask, batch.completion_mask[:, :-1]], axis=1)
  return model.hidden(params, tokens, mask, remat=remat, unroll=unroll,
                      last=completion_len)  # [B, T, D]


def teacher_forcing_inputs(model, batch: types.Batch) -> tuple[Array, Array]:
  """An encoder-decoder model's decoder tokens and mask, both `[B, T]`.

  [decoder start, completion[:-1]]: the completion shifted right by one, so
  decoder position t predicts completion token t. The start token is always
  real; the shifted completion keeps its (right-padded) mask.
  """
  completion = batch.completion_tokens  # [B, T]
  start = jnp.full((completion.shape[0], 1),
                   model.config.decoder_start_token_id, completion.dtype)
  tokens = jnp.concatenate([start, completion[:, :-1]], axis=1)  # [B, T]
  mask = jnp.concatenate(
      [jnp.ones_like(start, bool),
       batch.completion_mask[:, :-1].astype(bool)], axis=1)  # [B, T]
  return tokens, mask


def completion_logits(model, params: Params, batch: types.Batch, *,
                      remat: str = "none", unroll: bool = False) -> Array:
  """Logits `[B, T, V]` (float32) predicting each completion token.

  Only the T completion-predicting hidden states are unembedded, so no
  `[B, L, V]` array is built for the prompt positions. `remat` and
  `unroll` as in `completion_hidden`.
  """
  hidden = completion_hidden(model, params, batch, remat=remat,
                             unroll=unroll)  # [B, T, D]
  unembedding = model.unembedding(params)  # [D, V]
  return layers.unembed(hidden, unembedding)  # [B, T, V]


def student_logits(student, params: Params, batch: types.Batch,
                   config: AgentConfig) -> Array:
  """The student's completion logits `[B, T, V]` in an update.

  The parameters are cast to `config.compute_dtype`; only the student's
  forward passes are differentiated, so only they rematerialise
  (`config.remat`) and run unrolled (`student_unroll`); the teacher's and
  the reference's keep nothing.
  """
  return completion_logits(student, cast_params(params, config.compute_dtype),
                           batch, remat=config.remat,
                           unroll=student_unroll(config))


def student_unroll(config: AgentConfig) -> bool:
  """Whether the student's differentiated forward pass runs unrolled.

  Unless it rematerialises: a backward pass through the layers' scan keeps
  each layer's intermediates in stacked buffers, zero-filled and written and
  read by dynamic slices, which unrolled layers do not need (the default
  size of benchmarks/gkd_step.py: the student's forward and backward 15%
  faster on 2 CPU cores). A forward pass alone (the teacher's, sampling)
  keeps the scan, which is faster there, and so do the remat modes, which
  save memory only in the scan.
  """
  return config.remat == "none"


def teacher_logits(teacher, teacher_params: Params, batch: types.Batch,
                   compute_dtype: str) -> Array:
  """The teacher's completion logits `[B, T, V]` (float32, no gradient).

  From `batch.teacher_hidden` when the acting step computed it ahead of the
  update (only the unembedding remains), else by a full forward pass.
  """
  teacher_params = cast_params(teacher_params, compute_dtype)
  if batch.teacher_hidden is None:
    logits = completion_logits(teacher, teacher_params, batch)
  else:
    logits = layers.unembed(batch.teacher_hidden,
                            teacher.unembedding(teacher_params))  # [B, T, V]
  return jax.lax.stop_gradient(logits)


def token_log_probs(logits: Array, tokens: Array) -> Array:
  """log softmax(logits)[tokens]: `[B, T, V]`, `[B, T]` -> `[B, T]`."""
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return jnp.take_along_axis(log_probs, tokens[..., None], axis=-1)[..., 0]


LossFn = Callable[[Params, TrainingState, types.Batch, Params, Array],
                  tuple[Array, types.Metrics]]


def make_init(optimizer: optax.GradientTransformation, *,
              keep_reference: bool, param_dtype: str = "float32"
              ) -> Callable[[Params], TrainingState]:
  """`init(student_params) -> TrainingState`.

  The state holds copies of the parameters, cast to `param_dtype`, so the
  update can donate them without deleting the caller's arrays.
  """

  def init(params: Params) -> TrainingState:
    params = jax.tree.map(lambda p: jnp.array(p, copy=True), params)
    params = cast_params(params, param_dtype)
    ref = jax.tree.map(jnp.copy, params) if keep_reference else None
    return TrainingState(params=params, opt_state=optimizer.init(params),
                         step=jnp.zeros((), jnp.int32), ref_params=ref)

  return init


def make_update(loss_fn: LossFn, optimizer: optax.GradientTransformation, *,
                epochs: int = 1, jit: bool = True, grad_accum_steps: int = 1,
                reduction: str = "sequence",
                prepare: Callable[[types.Batch], types.Batch] | None = None
                ) -> Callable[..., tuple[TrainingState, types.Metrics]]:
  """One update: `epochs` gradient steps of `loss_fn` on one batch.

  A step whose loss or gradient is not finite leaves the state unchanged and
  reports `train/skipped = 1`, so one bad batch cannot poison the
  parameters; the runner stops on a non-finite loss.

  Args:
    loss_fn: `loss_fn(params, state, batch, teacher_params, key) -> (loss,
      metrics)`.
    optimizer: the optax transformation.
    epochs: gradient steps per batch (PPO epochs), >= 1.
    jit: return the function jitted, donating its state argument and logging
      each compile as "update"; False returns the plain function, for
      callers that transform it further (vmap) and jit it themselves.
    grad_accum_steps: N: each gradient is accumulated over N micro-batches
      of the batch (`gkdrl.agents.accumulation.value_and_grad`); `loss_fn`
      must then be a sum of `reduction` terms over the completion mask.
    reduction: the reduction of `loss_fn`'s terms (weights the
      micro-batches).
    prepare: `prepare(batch) -> batch` on the whole batch before any split
      (what is not a per-row quantity: the RL agents' advantages).

  Returns:
    `update(state, batch, teacher_params, key) -> (new_state, metrics)`.
  """
  validation.check_int("grad_accum_steps", grad_accum_steps, 1)
  grad_fn = accumulation.value_and_grad(loss_fn, grad_accum_steps, reduction)

  def one_step(state: TrainingState, batch, teacher_params, key):
    (loss, metrics), grads = grad_fn(
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

  def update(state: TrainingState, batch: types.Batch, teacher_params,
             key: Array) -> tuple[TrainingState, types.Metrics]:
    if jit:
      log_compile("update", batch=batch)
    if prepare is not None:
      batch = prepare(batch)
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

  # Donating the state lets XLA write the new parameters and optimizer
  # moments over the old ones: one copy of the state in memory, not two.
  return jax.jit(update, donate_argnums=0) if jit else update
