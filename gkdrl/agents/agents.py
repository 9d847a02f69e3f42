"""The agents: SFT, SeqKD, supervised KD, GKD, RL and GKD+RL.

Each is `make_agent(config, ...)` -> `Agent(init, act, update)`; the config
class picks the agent. The losses come from `gkdrl.losses`:

  sft            -reduce(log p_S(y_t)) on dataset targets.
  seqkd          the same on teacher samples.
  supervised_kd  reduce(D(p_T || p_S)) on dataset targets (paper Eq. 3).
  gkd            the same on student samples with probability lmbda
                 (paper Algorithm 1).
  rl             REINFORCE (or PPO) on rewards of student samples, with an
                 optional KL to the initial student.
  gkd_rl         (1 - alpha) REINFORCE + alpha divergence (paper Eq. 5).
"""

from collections.abc import Callable
import functools
from typing import Any

import jax
import jax.numpy as jnp

from gkdrl import losses
from gkdrl import types
from gkdrl.agents import acting
from gkdrl.agents import base
from gkdrl.agents import configs
from gkdrl.agents import optimizer as optimizer_lib
from gkdrl import validation

AGENT_CONFIGS = {
    "sft": configs.SFTConfig,
    "seqkd": configs.SeqKDConfig,
    "supervised_kd": configs.SupervisedKDConfig,
    "gkd": configs.GKDConfig,
    "rl": configs.RLConfig,
    "gkd_rl": configs.GKDRLConfig,
}
_NAMES = {cls: name for name, cls in AGENT_CONFIGS.items()}


def agent_name(config: base.AgentConfig) -> str:
  """The registry name of a config's agent."""
  if type(config) not in _NAMES:
    raise ValueError(f"config of type {type(config).__name__} is not an "
                     f"agent config; known: {sorted(AGENT_CONFIGS)}.")
  return _NAMES[type(config)]


def make_config(name: str, **kwargs) -> base.AgentConfig:
  """Builds the config of agent `name` from keyword arguments."""
  if name not in AGENT_CONFIGS:
    raise ValueError(f"agent={name!r} is not recognised; allowed values: "
                     f"{', '.join(sorted(AGENT_CONFIGS))}.")
  return AGENT_CONFIGS[name](**kwargs)


def _uses(config) -> tuple[bool, bool]:
  """(uses_teacher, uses_reward) for a config."""
  name = agent_name(config)
  if name == "sft":
    return False, False
  if name in ("seqkd", "supervised_kd", "gkd"):
    return True, False
  if name == "rl":
    return False, True
  return config.alpha > 0.0, config.alpha < 1.0


def make_agent(config: base.AgentConfig, *, student, teacher=None,
               tokenizer=None, reward=None, eos_token_id: int | None = None,
               pad_token_id: int | None = None) -> base.Agent:
  """Builds the agent `config` describes.

  Args:
    config: one of the configs in `AGENT_CONFIGS`.
    student: the student `LanguageModel`.
    teacher: the teacher `LanguageModel` (agents that use one).
    tokenizer: decodes completions for host reward models (RL agents).
    reward: a `RewardModel` (RL agents with alpha < 1).
    eos_token_id: end of a sampled completion; defaults to the tokenizer's.
    pad_token_id: written after a completion ends; defaults to the
      tokenizer's, else EOS.

  Returns:
    The `Agent`.
  """
  name = agent_name(config)
  uses_teacher, uses_reward = _uses(config)
  if uses_teacher and teacher is None:
    raise ValueError(f"agent {name!r} needs a teacher model.")
  if uses_reward and reward is None:
    raise ValueError(f"agent {name!r} with this config needs a reward model.")
  if uses_reward and tokenizer is None:
    raise ValueError(f"agent {name!r} needs the tokenizer to decode "
                     "completions for the reward model.")
  if teacher is not None and (teacher.config.vocab_size
                              != student.config.vocab_size):
    raise ValueError(
        f"teacher and student vocabularies differ: teacher vocab_size="
        f"{teacher.config.vocab_size}, student vocab_size="
        f"{student.config.vocab_size}; distillation needs one vocabulary.")
  if eos_token_id is None:
    eos_token_id = getattr(tokenizer, "eos_token_id", None)
    if eos_token_id is None:
      eos_token_id = student.config.eos_token_id
  if pad_token_id is None:
    pad_token_id = getattr(tokenizer, "pad_token_id", None)
    if pad_token_id is None:
      pad_token_id = eos_token_id

  optimizer = optimizer_lib.make_optimizer(config.optimizer)
  keep_ref = name in ("rl", "gkd_rl") and config.ref_kl_coef > 0
  loss_fn = _make_loss(name, config, student, teacher)
  epochs = config.ppo_epochs if name == "rl" else 1
  update = base.make_update(loss_fn, optimizer, epochs=epochs)
  act = _make_act(name, config, student, teacher, tokenizer, reward,
                  eos_token_id, pad_token_id)
  return base.Agent(name=name, config=config,
                    init=base.make_init(optimizer, keep_reference=keep_ref,
                                        param_dtype=config.param_dtype),
                    act=act, update=update, uses_teacher=uses_teacher,
                    uses_reward=uses_reward)


def _make_loss(name, config, student, teacher) -> base.LossFn:
  """The loss of agent `name` as a function of the student parameters."""
  dtype = config.compute_dtype

  # Only the student's forward passes are differentiated, so only they
  # rematerialise; the teacher's and the reference's keep nothing.
  def student_logits(params, batch):
    return base.completion_logits(student, base.cast_params(params, dtype),
                                  batch, remat=config.remat)

  def nll_loss(params, state, batch, teacher_params, key):
    del state, teacher_params, key
    logp = base.token_log_probs(student_logits(params, batch),
                                batch.completion_tokens)
    loss = -losses.masked_reduce(logp, batch.completion_mask,
                                 reduction=config.reduction)
    return loss, {"loss/nll": loss}

  chunk_size = (config.chunk_size(student.config.vocab_size)
                if name in ("supervised_kd", "gkd") else 0)

  def chunked_distillation(params, state, batch, teacher_params, key):
    del state, key
    params = base.cast_params(params, dtype)
    teacher_params = base.cast_params(teacher_params, dtype)
    return losses.chunked_distillation_loss(
        base.completion_hidden(student, params, batch, remat=config.remat),
        student.unembedding(params),
        base.completion_hidden(teacher, teacher_params, batch),
        teacher.unembedding(teacher_params), batch.completion_mask,
        divergence=config.divergence, reduction=config.reduction,
        chunk_size=chunk_size, **config.divergence_kwargs())

  def distillation(params, state, batch, teacher_params, key):
    del state, key
    return losses.distillation_loss(
        student_logits(params, batch),
        base.teacher_logits(teacher, teacher_params, batch, dtype),
        batch.completion_mask, divergence=config.divergence,
        reduction=config.reduction, **config.divergence_kwargs())

  def reinforce(params, state, batch, teacher_params, key):
    del teacher_params, key
    s_logits = student_logits(params, batch)
    ref_logits = _reference_logits(config, student, state, batch)
    if config.ppo_epochs > 1:
      return _ppo_loss(config, s_logits, ref_logits, batch)
    return losses.gkd_rl_loss(
        s_logits, None, batch.completion_tokens, batch.completion_mask,
        batch.rewards, alpha=0.0, baseline=config.baseline,
        group_size=config.samples_per_prompt, ref_logits=ref_logits,
        ref_kl_coef=config.ref_kl_coef, reduction=config.reduction)

  if name in ("sft", "seqkd"):
    return nll_loss
  if name in ("supervised_kd", "gkd"):
    return chunked_distillation if chunk_size else distillation
  if name == "rl":
    return reinforce
  return functools.partial(make_gkd_rl_loss(config, student, teacher),
                           alpha=config.alpha)


def make_gkd_rl_loss(config: configs.GKDRLConfig, student, teacher
                     ) -> Callable[..., tuple[types.Array, types.Metrics]]:
  """gkd_rl's loss (paper Eq. 5) with the teacher weight alpha an input.

  `loss(params, state, batch, teacher_params, key, *, alpha) -> (loss,
  metrics)`, a `base.LossFn` once alpha is bound. The gkd_rl agent binds
  its config's alpha, a Python number: at alpha = 0 the teacher is not
  run, at alpha = 1 the rewards are not read. A traced alpha (one student
  per alpha under `jax.vmap`, as `gkdrl.runners.sweep_alpha --vectorized`
  trains them) runs both, and `gkdrl.losses.gkd_rl_loss` swaps the unused
  one out before use, so the loss and gradient are those of the agent with
  that alpha. `config.alpha` itself is not read.

  Args:
    config: the gkd_rl settings.
    student: the student `LanguageModel`.
    teacher: the teacher `LanguageModel`.

  Returns:
    The loss function.
  """
  dtype = config.compute_dtype
  kwargs = dict(divergence=config.divergence, kl_mode=config.kl_mode,
                **config.divergence_kwargs())
  kwargs.setdefault("beta", config.beta)

  def loss_fn(params, state, batch, teacher_params, key, *, alpha):
    del key
    static = validation.is_static_number(alpha)
    s_logits = base.completion_logits(
        student, base.cast_params(params, dtype), batch,
        remat=config.remat)  # [B, T, V]
    t_logits = None
    if not (static and alpha == 0.0):
      t_logits = base.teacher_logits(teacher, teacher_params, batch, dtype)
    loss, metrics = losses.gkd_rl_loss(
        s_logits, t_logits, batch.completion_tokens, batch.completion_mask,
        None if (static and alpha == 1.0) else batch.rewards, alpha=alpha,
        baseline=config.baseline, group_size=config.samples_per_prompt,
        ref_logits=_reference_logits(config, student, state, batch),
        ref_kl_coef=config.ref_kl_coef, reduction=config.reduction,
        **kwargs)
    if not static:
      # At alpha = 0 a fixed alpha has no divergence term and reports 0;
      # a traced one computes D(sg(student) || student), 0 up to rounding.
      metrics["loss/divergence"] = jnp.where(alpha == 0.0, 0.0,
                                             metrics["loss/divergence"])
    return loss, metrics

  return loss_fn


def _reference_logits(config, student, state, batch) -> types.Array | None:
  """The initial student's logits `[B, T, V]` (no gradient), if weighed."""
  if config.ref_kl_coef <= 0:
    return None
  ref_params = base.cast_params(state.ref_params, config.compute_dtype)
  return jax.lax.stop_gradient(
      base.completion_logits(student, ref_params, batch))  # [B, T, V]


def _ppo_loss(config, s_logits, ref_logits, batch):
  """PPO's clipped surrogate on sequence advantages (+ reference KL)."""
  logp_a = base.token_log_probs(s_logits, batch.completion_tokens)
  advantages = losses.sequence_advantages(
      batch.rewards, baseline=config.baseline,
      group_size=config.samples_per_prompt)
  loss, metrics = losses.ppo_clip_loss(
      logp_a, batch.behaviour_logp_a, advantages, batch.completion_mask,
      epsilon=config.ppo_epsilon, reduction=config.reduction)
  metrics["reward/mean"] = jnp.mean(batch.rewards)
  if ref_logits is not None:
    ref_kl = losses.masked_reduce(
        losses.reverse_kl(s_logits, ref_logits), batch.completion_mask,
        reduction=config.reduction)
    loss = loss + config.ref_kl_coef * ref_kl
    metrics["kl/reference"] = jax.lax.stop_gradient(ref_kl)
  return loss, metrics


def _make_act(name, config, student, teacher, tokenizer, reward,
              eos_token_id, pad_token_id):
  """`act(state, task_batch, key, *, teacher_params, reward_params)`."""
  sample = lambda model, params, key, task_batch: acting.sample_batch(
      model, params, key, task_batch, config=config,
      eos_token_id=eos_token_id, pad_token_id=pad_token_id)

  def act(state: base.TrainingState, task_batch, key: types.PRNGKey, *,
          teacher_params: Any = None, reward_params: Any = None
          ) -> tuple[types.Batch, dict[str, float]]:
    info = {}
    if name in ("sft", "supervised_kd"):
      batch = acting.dataset_batch(task_batch)
    elif name == "seqkd":
      batch = sample(teacher, teacher_params, key, task_batch)
    elif name == "gkd":
      coin_key, sample_key = jax.random.split(key)
      on_policy = acting.draw_student_data(coin_key, config.lmbda)
      info["rollout/student_data"] = float(on_policy)
      if on_policy:
        batch = sample(student, state.params, sample_key, task_batch)
      else:
        batch = acting.dataset_batch(task_batch)
    else:
      task_batch = acting.repeat_rows(task_batch, config.samples_per_prompt)
      batch = sample(student, state.params, key, task_batch)
      if name == "gkd_rl" and 0.0 < config.alpha < 1.0 and reward.on_host:
        # Dispatched before the host rewards, so the two overlap.
        batch = acting.with_teacher_hidden(
            teacher, teacher_params, batch,
            compute_dtype=config.compute_dtype)
      if name == "rl" or config.alpha < 1.0:
        rewards = acting.score_batch(reward, reward_params, tokenizer, batch,
                                     task_batch.sources, task_batch.targets)
        batch = batch._replace(rewards=rewards)
        # Over the global batch: every process logs the same mean.
        info["reward/mean"] = jnp.mean(rewards)
    info.update(acting.rollout_info(batch))
    return batch, info

  return act
