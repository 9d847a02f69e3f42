"""GKD + RL (paper Eq. 5): REINFORCE on rewards plus the GKD divergence.

One step, top to bottom:

  1. act: each prompt repeated `samples_per_prompt` times; the student
     samples a completion per row (on-policy, as GKD with lmbda = 1); with
     alpha > 0 and a host reward model, the teacher's forward pass is
     dispatched first so that it overlaps the host rewards (where JAX
     dispatches asynchronously: not on a CPU after
     `runners.cpu_memory.keep_scratch_memory`); with alpha < 1
     the reward model scores the completions.
  2. update (jitted, `base.make_update`): the teacher's and the student's
     logits on the samples, and `gkdrl.losses.gkd_rl_loss`:

         loss = (1 - alpha) * L_pg + alpha * reduce(D(p_T || p_S))
                + ref_kl_coef * reduce(KL(p_S || p_ref)),

     then one optimiser step. At alpha = 0 the teacher is never run, at
     alpha = 1 the rewards are never computed.

`make_gkd_rl_loss` leaves alpha an input, so `gkdrl.agents.stacked` can
train one student per alpha in one program with the same loss.

See "On-Policy Distillation of Language Models: Learning from
Self-Generated Mistakes", Agarwal et al., ICLR 2024
(https://arxiv.org/abs/2306.13649), Eq. 5.
"""

from collections.abc import Callable
import dataclasses
import functools

import jax

import jax.numpy as jnp

from gkdrl import losses
from gkdrl import types
from gkdrl import validation
from gkdrl.agents import acting
from gkdrl.agents import alpha_schedule
from gkdrl.agents import base
from gkdrl.agents import distill
from gkdrl.agents import registry
from gkdrl.agents import rl
from gkdrl.losses import objectives


@dataclasses.dataclass(frozen=True, kw_only=True)
class GKDRLConfig(distill.DistillationConfig, rl.RLConfig):
  """GKD + RL (paper Eq. 5).

  Attributes:
    alpha: teacher weight in [0, 1]; 1 is pure GKD (no reward computed),
      0 pure RL (teacher not run).
    beta: JSD coefficient; 0.9 is the paper's choice when mixing with RL.
    kl_mode: "analytic" (full-vocabulary divergence, the paper) or
      "sampled" (the per-token log-ratio folded into the advantage).
    alpha_schedule: how alpha moves during the run: "constant" (alpha),
      "linear" (from alpha to alpha_end over alpha_steps updates) or
      "adaptive" (a proportional controller holding the teacher's reverse
      KL, "kl/teacher", near target_teacher_kl; see
      `gkdrl.agents.alpha_schedule`). Non-constant schedules keep alpha in
      the training state, log it as "train/alpha", and compute both the
      teacher and the rewards every step.
    alpha_end: alpha after alpha_steps updates of the linear schedule,
      [0, 1].
    alpha_steps: updates over which the linear schedule moves alpha (set
      it to the run's steps), >= 1.
    target_teacher_kl: the teacher KL the adaptive schedule holds, > 0.
    alpha_gain: the adaptive controller's gain: alpha changes by at most a
      factor 1 +- 0.2 * alpha_gain per step, > 0.
  """

  alpha: float = 0.5
  beta: float = 0.9
  kl_mode: str = "analytic"
  alpha_schedule: str = "constant"
  alpha_end: float = 1.0
  alpha_steps: int = 1000
  target_teacher_kl: float = 0.1
  alpha_gain: float = 0.5

  def __post_init__(self):
    super().__post_init__()
    validation.check_unit_interval("alpha", self.alpha)
    validation.check_choice("kl_mode", self.kl_mode, objectives.KL_MODES)
    validation.check_choice("alpha_schedule", self.alpha_schedule,
                            alpha_schedule.SCHEDULES)
    validation.check_unit_interval("alpha_end", self.alpha_end)
    validation.check_int("alpha_steps", self.alpha_steps, 1)
    validation.check_positive("target_teacher_kl", self.target_teacher_kl)
    validation.check_positive("alpha_gain", self.alpha_gain)
    if self.cross_tokenizer != "none":
      validation.fail("cross_tokenizer", self.cross_tokenizer,
                      "gkd_rl distils from a teacher with the student's "
                      "tokenizer only: 'none' (agents supervised_kd and gkd "
                      "take 'align' and 'uld')")
    if self.ppo_epochs > 1:
      validation.fail("ppo_epochs", self.ppo_epochs,
                      "gkd_rl takes one gradient step per rollout "
                      "(ppo_epochs=1); only the 'rl' agent takes more")

  def unread_settings(self) -> dict[str, str]:
    unread = super().unread_settings()
    if self.kl_mode == "sampled":
      why = ("kl_mode='sampled' folds the sampled log-ratio into the "
             "advantage; it computes no divergence")
      unread.update(dict.fromkeys(
          ("divergence", "beta", "normalized", "skew", "loss_chunk_size",
           "teacher_top_k"),
          why))
    unread["ppo_epsilon"] = "gkd_rl takes one unclipped step per rollout"
    schedule_reads = {"linear": ("alpha_end", "alpha_steps"),
                      "adaptive": ("target_teacher_kl", "alpha_gain")}
    for schedule, names in schedule_reads.items():
      if self.alpha_schedule != schedule:
        unread.update(dict.fromkeys(
            names, f"only alpha_schedule={schedule!r} reads it"))
    return unread

  @property
  def scheduled(self) -> bool:
    """Whether alpha is a traced state value rather than a number."""
    return self.alpha_schedule != "constant"


def make_gkd_rl_loss(config: GKDRLConfig, student, teacher
                     ) -> Callable[..., tuple[types.Array, types.Metrics]]:
  """gkd_rl's loss (paper Eq. 5) with the teacher weight alpha an input.

  `loss(params, state, batch, teacher_params, key, *, alpha) -> (loss,
  metrics)`, a `base.LossFn` once alpha is bound. The gkd_rl agent binds
  its config's alpha, a Python number: at alpha = 0 the teacher is not
  run, at alpha = 1 the rewards are not read. A traced alpha (one student
  per alpha under `jax.vmap`, as `gkdrl.agents.stacked` trains them) runs
  both, and `gkdrl.losses.gkd_rl_loss` swaps the unused one out before
  use, so the loss and gradient are those of the agent with that alpha.
  `config.alpha` itself is not read.

  For a large vocabulary (`config.chunk_size`) the analytic divergence is
  computed a chunk of positions at a time (`gkd_rl_loss`'s chunk_size).

  Args:
    config: the gkd_rl settings.
    student: the student `LanguageModel`.
    teacher: the teacher `LanguageModel`.

  Returns:
    The loss function.
  """
  dtype = config.compute_dtype
  kwargs = dict(divergence=config.divergence, kl_mode=config.kl_mode,
                chunk_size=config.chunk_size(student.config.vocab_size),
                **config.divergence_kwargs())
  kwargs.setdefault("beta", config.beta)

  def loss_fn(params, state, batch, teacher_params, key, *, alpha):
    del key
    static = validation.is_static_number(alpha)
    s_logits = base.student_logits(student, params, batch,
                                   config)  # [B, T, V]
    t_logits = None
    if not (static and alpha == 0.0) and config.teacher_top_k:
      t_logits = distill.top_k_teacher(config, teacher, teacher_params,
                                       batch)  # [B, T, k]
    elif not (static and alpha == 0.0):
      t_logits = base.teacher_logits(teacher, teacher_params, batch, dtype)
    loss, metrics = losses.gkd_rl_loss(
        s_logits, t_logits, batch.completion_tokens, batch.completion_mask,
        None if (static and alpha == 1.0) else batch.rewards, alpha=alpha,
        baseline=config.baseline, group_size=config.samples_per_prompt,
        ref_logits=rl.reference_logits(config, student, state, batch),
        ref_kl_coef=config.ref_kl_coef, reduction=config.reduction,
        advantages=batch.advantages, **kwargs)
    if not static:
      # At alpha = 0 a fixed alpha has no divergence term and reports 0;
      # a traced one computes D(sg(student) || student), 0 up to rounding.
      metrics["loss/divergence"] = jnp.where(alpha == 0.0, 0.0,
                                             metrics["loss/divergence"])
    metrics["train/alpha"] = jnp.asarray(alpha, jnp.float32)
    return loss, metrics

  return loss_fn


def make_act(config: GKDRLConfig, parts: registry.Parts):
  """`act`: student samples, the teacher ahead of host rewards, rewards."""
  teacher_ahead = ((config.scheduled or 0.0 < config.alpha < 1.0)
                   and parts.reward is not None and parts.reward.on_host)

  def act(state, task_batch, key, *, teacher_params=None,
          reward_params=None):
    batch, task_batch = rl.sample_rollout(config, parts, state, task_batch,
                                          key)
    if teacher_ahead:
      # Dispatched before the host rewards, so the two overlap (unless CPU
      # computations run on the calling thread; acting.with_teacher_hidden).
      batch = acting.with_teacher_hidden(
          parts.teacher, teacher_params, batch,
          compute_dtype=config.compute_dtype,
          micro_batches=config.grad_accum_steps)
    info = {}
    if config.scheduled or config.alpha < 1.0:
      batch, info = rl.add_rewards(parts, reward_params, batch, task_batch)
    return batch, {**info, **acting.rollout_info(batch)}

  return act


def build(config: GKDRLConfig, parts: registry.Parts) -> base.Agent:
  loss = make_gkd_rl_loss(config, parts.student, parts.teacher)
  if config.scheduled:
    return _with_schedule(config, registry.assemble(
        config, lambda p, s, b, t, k: loss(p, s, b, t, k, alpha=s.alpha),
        make_act(config, parts), uses_teacher=True, uses_reward=True,
        keep_reference=config.ref_kl_coef > 0,
        prepare=rl.make_prepare(config)))
  return registry.assemble(
      config, functools.partial(loss, alpha=config.alpha),
      make_act(config, parts),
      uses_teacher=config.alpha > 0.0, uses_reward=config.alpha < 1.0,
      keep_reference=config.ref_kl_coef > 0, prepare=rl.make_prepare(config))


def _with_schedule(config: GKDRLConfig, agent: base.Agent) -> base.Agent:
  """The agent with alpha in its state, moved after each update."""

  def init(params):
    return agent.init(params)._replace(
        alpha=alpha_schedule.initial_alpha(config))

  @jax.jit
  def move(old_state, new_state, metrics):
    alpha = alpha_schedule.next_alpha(config, new_state, metrics)
    applied = new_state.step > old_state.step
    return new_state._replace(alpha=jnp.where(applied, alpha,
                                              old_state.alpha))

  def update(state, batch, teacher_params, key):
    # Copies: the update donates (deletes) the state's buffers.
    old = base.TrainingState(params=None, opt_state=None,
                             step=jnp.array(state.step, copy=True),
                             alpha=jnp.array(state.alpha, copy=True))
    new_state, metrics = agent.update(state, batch, teacher_params, key)
    return move(old, new_state, metrics), metrics

  return agent._replace(init=init, update=update)


registry.register("gkd_rl", GKDRLConfig, build)
