"""Supervised KD and GKD: a token-level divergence to the teacher.

One GKD step (paper Algorithm 1), top to bottom:

  1. act: a coin with probability lmbda picks the data: the student samples
     completions for the prompts (on-policy), else the dataset's targets
     are used. Supervised KD (paper Eq. 3) always takes the dataset.
  2. update (jitted, `base.make_update`): the teacher's logits on the
     batch, the student's, and

         loss = reduce_{b, t}( D(p_T(. | y_<t, x) || p_S(. | y_<t, x)) )

     (paper Eq. 2), whose gradient reaches the student only (the samples
     carry no gradient: the paper's sg), then one optimiser step.

For large vocabularies the divergence is computed from hidden states in
chunks of positions, so no `[B, T, V]` array is alive (`chunk_size`).

See "On-Policy Distillation of Language Models: Learning from
Self-Generated Mistakes", Agarwal et al., ICLR 2024
(https://arxiv.org/abs/2306.13649).
"""

import dataclasses

import jax

from gkdrl import losses
from gkdrl import validation
from gkdrl.agents import acting
from gkdrl.agents import base
from gkdrl.agents import cached_teacher
from gkdrl.agents import cross_tokenizer
from gkdrl.agents import registry
from gkdrl.agents import rollout_config
from gkdrl.losses import cross_tokenizer as xtok_losses
from gkdrl.losses import divergences
from gkdrl.losses import objectives
from gkdrl.tasks import teacher_cache

# From this vocabulary size on, distillation losses are chunked by default.
LARGE_VOCABULARY = 32_768
CROSS_TOKENIZER_MODES = ("none",) + xtok_losses.MODES


@dataclasses.dataclass(frozen=True, kw_only=True)
class DistillationConfig(base.AgentConfig):
  """Settings of the token-level divergence to the teacher.

  Attributes:
    divergence: token-level divergence, a name of
      `gkdrl.losses.DIVERGENCES`: forward_kl, reverse_kl, jsd,
      skew_forward_kl, skew_reverse_kl or tvd.
    beta: JSD(beta) coefficient in [0, 1] (divergence "jsd").
    normalized: divide JSD by beta * (1 - beta) (a gkdrl extension;
      divergence "jsd").
    skew: mixture weight of the skew KLs, [0, 1] (divergences
      "skew_forward_kl" and "skew_reverse_kl").
    student_temperature: divides the student logits in the loss, in
      [1e-3, 1e3].
    teacher_temperature: divides the teacher logits, i.e. sharpens (< 1) or
      flattens the target distribution (paper: 0.1 or 1.0), in [1e-3, 1e3].
    loss_chunk_size: positions per chunk of the divergence, >= 0: compute
      the divergence a chunk of this many positions
      at a time, so no [B, T, V] temporaries of it are alive: gkd and
      supervised_kd compute logits and divergence from hidden states
      (`gkdrl.losses.chunked_distillation_loss`); gkd_rl, which needs the
      student's logits for its REINFORCE term anyway, chunks the divergence
      of those logits by rows (`gkdrl.losses.gkd_rl_loss`'s chunk_size).
      None (default) chunks by 128 when V >= 32,768 (unless
      teacher_top_k > 0); 0 never chunks.
    teacher_top_k: the teacher's distribution kept per position, >= 0: 0
      (default) is the full vocabulary; k > 0 keeps the teacher's k most
      likely tokens (after its temperature) plus one tail bucket, taken
      right after its unembedding, so the loss holds [B, T, k] of the
      teacher, not [B, T, V], and computes the divergence over the k + 1
      buckets (`gkdrl.losses.top_k_divergence`): exact at k = V, below the
      full divergence otherwise. Not with loss_chunk_size > 0.
    cross_tokenizer: "none" (default: teacher and student share one
      tokenizer), or, for a teacher with its own tokenizer (make_agent's
      teacher_tokenizer), how the two are compared after the batch's text
      is encoded again for the teacher and the tokens are aligned by
      character offsets (`gkdrl.agents.cross_tokenizer`): "align" takes
      `divergence` over the tokens both vocabularies hold (plus one tail
      bucket) where the two tokens span the same characters and ULD
      elsewhere; "uld" takes ULD everywhere
      (`gkdrl.losses.cross_tokenizer_loss`). Not with teacher_top_k or
      loss_chunk_size > 0.
  """

  divergence: str = "jsd"
  beta: float = objectives.DEFAULT_DISTILLATION_BETA
  normalized: bool = False
  skew: float = 0.1
  student_temperature: float = 1.0
  teacher_temperature: float = 1.0
  loss_chunk_size: int | None = None
  teacher_top_k: int = 0
  cross_tokenizer: str = "none"

  def __post_init__(self):
    super().__post_init__()
    validation.check_choice("cross_tokenizer", self.cross_tokenizer,
                            CROSS_TOKENIZER_MODES)
    if self.cross_tokenizer != "none":
      for name in ("teacher_top_k", "loss_chunk_size"):
        if getattr(self, name):
          validation.fail(name, getattr(self, name),
                          f"cross_tokenizer={self.cross_tokenizer!r} "
                          "compares the two models' full distributions "
                          "without chunks: leave it unset or 0")
    if self.loss_chunk_size is not None:
      validation.check_int("loss_chunk_size", self.loss_chunk_size, 0)
    validation.check_int("teacher_top_k", self.teacher_top_k, 0)
    if self.teacher_top_k and self.loss_chunk_size:
      validation.fail("loss_chunk_size", self.loss_chunk_size,
                      "teacher_top_k > 0 computes the divergence from the "
                      "teacher's [B, T, k] top-k without chunks: leave "
                      "loss_chunk_size unset or 0")
    validation.check_choice("divergence", self.divergence,
                            divergences.DIVERGENCES)
    validation.check_unit_interval("beta", self.beta)
    validation.check_unit_interval("skew", self.skew)
    validation.check_temperature("student_temperature",
                                 self.student_temperature)
    validation.check_temperature("teacher_temperature",
                                 self.teacher_temperature)

  def unread_settings(self) -> dict[str, str]:
    """Adds the divergence parameters that `divergence` takes no part of."""
    unread = super().unread_settings()
    takes = divergences.DIVERGENCE_PARAMETERS[self.divergence]
    for name in ("beta", "normalized", "skew"):
      if name not in takes:
        users = sorted(d for d, p in divergences.DIVERGENCE_PARAMETERS.items()
                       if name in p)
        unread[name] = (f"divergence={self.divergence!r} takes no {name} "
                        f"(divergences that do: {', '.join(users)})")
    return unread

  def chunk_size(self, vocab_size: int) -> int:
    """Positions per loss chunk for a vocabulary; 0 means no chunking."""
    if self.loss_chunk_size is not None:
      return self.loss_chunk_size
    if self.teacher_top_k or self.cross_tokenizer != "none":
      return 0
    return 128 if vocab_size >= LARGE_VOCABULARY else 0

  def divergence_kwargs(self) -> dict:
    """The keyword arguments `gkdrl.losses.divergence` takes for ours."""
    own = {"beta": self.beta, "normalized": self.normalized,
           "skew": self.skew}
    kwargs = {k: own[k]
              for k in divergences.DIVERGENCE_PARAMETERS[self.divergence]}
    kwargs["student_temperature"] = self.student_temperature
    kwargs["teacher_temperature"] = self.teacher_temperature
    return kwargs


@dataclasses.dataclass(frozen=True, kw_only=True)
class SupervisedKDConfig(DistillationConfig):
  """Supervised KD (paper Eq. 3): forward KL on the dataset targets.

  Attributes:
    teacher_cache: directory of an offline teacher cache built by
      `gkdrl.runners.cache_teacher` (--mode=top_k for supervised_kd: the
      divergence over the teacher's k cached tokens plus one tail bucket;
      --mode=samples for seqkd: one cached teacher completion per
      example): train from it with no teacher in memory. Unset uses the
      live teacher. With a top_k cache, teacher_top_k is 0 (the cache's k)
      or the cache's k; another value is refused.
  """

  divergence: str = "forward_kl"
  teacher_cache: str | None = None

  def __post_init__(self):
    super().__post_init__()
    if self.teacher_cache and self.cross_tokenizer != "none":
      validation.fail("cross_tokenizer", self.cross_tokenizer,
                      "a teacher cache holds ids of the student's own "
                      "tokenizer: 'none' with teacher_cache")

  def unread_settings(self) -> dict[str, str]:
    unread = {**super().unread_settings(), **rollout_config.unread_sampling(
        "supervised_kd trains on dataset targets and samples nothing")}
    if self.teacher_cache:
      unread["loss_chunk_size"] = ("a teacher cache's loss is over k + 1 "
                                   "buckets and is never chunked")
    return unread


@dataclasses.dataclass(frozen=True, kw_only=True)
class GKDConfig(DistillationConfig):
  """GKD (paper Algorithm 1).

  Attributes:
    lmbda: student data fraction in [0, 1]: each batch is sampled by the
      student with probability lmbda (one draw per batch from the PRNG
      key), else taken from the dataset. 1 is on-policy, 0 supervised.
  """

  lmbda: float = 1.0

  def __post_init__(self):
    super().__post_init__()
    validation.check_unit_interval("lmbda", self.lmbda)


def make_gkd_act(config: GKDConfig, parts: registry.Parts):
  """Algorithm 1's data step: student samples with probability lmbda."""

  def act(state, task_batch, key, *, teacher_params=None,
          reward_params=None):
    del teacher_params, reward_params
    coin_key, sample_key = jax.random.split(key)
    on_policy = acting.draw_student_data(coin_key, config.lmbda)
    if on_policy:
      batch = acting.sample_batch(
          parts.student, state.params, sample_key, task_batch, config=config,
          eos_token_id=parts.eos_token_id, pad_token_id=parts.pad_token_id)
    else:
      batch = acting.dataset_batch(task_batch)
    return batch, {"rollout/student_data": float(on_policy),
                   **acting.rollout_info(batch)}

  return act


def supervised_act(state, task_batch, key, *, teacher_params=None,
                   reward_params=None):
  """Supervised KD's data: always the dataset's targets."""
  del state, key, teacher_params, reward_params
  batch = acting.dataset_batch(task_batch)
  return batch, acting.rollout_info(batch)


def make_distillation_loss(config: DistillationConfig,
                           parts: registry.Parts) -> base.LossFn:
  """reduce(D(p_T || p_S)) on the batch (paper Eq. 2), from the teacher's
  and the student's logits, or their hidden states in chunks."""
  if parts.teacher_tokenizer is not None:
    return cross_tokenizer.make_loss(config, parts)
  student, teacher = parts.student, parts.teacher
  dtype = config.compute_dtype
  chunk_size = config.chunk_size(student.config.vocab_size)

  def top_k_loss_fn(params, state, batch, teacher_params, key):
    del state, key
    return losses.top_k_distillation_loss(
        base.student_logits(student, params, batch, config),  # [B, T, V]
        top_k_teacher(config, teacher, teacher_params, batch),  # [B, T, k]
        batch.completion_mask, divergence=config.divergence,
        reduction=config.reduction, **config.divergence_kwargs())

  def loss_fn(params, state, batch, teacher_params, key):
    del state, key
    return losses.distillation_loss(
        base.student_logits(student, params, batch, config),  # [B, T, V]
        base.teacher_logits(teacher, teacher_params, batch, dtype),
        batch.completion_mask, divergence=config.divergence,
        reduction=config.reduction, **config.divergence_kwargs())

  def chunked_loss_fn(params, state, batch, teacher_params, key):
    del state, key
    params = base.cast_params(params, dtype)
    teacher_params = base.cast_params(teacher_params, dtype)
    return losses.chunked_distillation_loss(
        base.completion_hidden(
            student, params, batch, remat=config.remat,
            unroll=base.student_unroll(config)),  # [B, T, D_s]
        student.unembedding(params),  # [D_s, V]
        base.completion_hidden(teacher, teacher_params, batch),  # [B, T, D_t]
        teacher.unembedding(teacher_params), batch.completion_mask,
        divergence=config.divergence, reduction=config.reduction,
        chunk_size=chunk_size, **config.divergence_kwargs())

  if config.teacher_top_k:
    return top_k_loss_fn
  return chunked_loss_fn if chunk_size else loss_fn


def top_k_teacher(config: DistillationConfig, teacher, teacher_params,
                  batch) -> losses.TopKTeacher:
  """The teacher's top-k on the batch (`[B, T, k]`), taken right after its
  unembedding in the same jitted function, so its `[B, T, V]` logits are a
  temporary of the forward pass only."""
  return losses.top_k_teacher(
      base.teacher_logits(teacher, teacher_params, batch,
                          config.compute_dtype),
      config.teacher_top_k, temperature=config.teacher_temperature)


def build_supervised_kd(config: SupervisedKDConfig,
                        parts: registry.Parts) -> base.Agent:
  if config.teacher_cache:
    cache = teacher_cache.open_cache(config.teacher_cache, expected=dict(
        mode="top_k", teacher_temperature=config.teacher_temperature,
        **teacher_cache.tokenizer_identity(parts.tokenizer)))
    cached_teacher.cache_top_k(config, cache)
    return registry.assemble(
        config, cached_teacher.make_cached_kd_loss(config, parts.student),
        cached_teacher.make_cached_kd_act(cache), uses_teacher=False,
        uses_reward=False)
  loss_fn, act = make_distillation_loss(config, parts), supervised_act
  if parts.teacher_tokenizer is not None:
    act = cross_tokenizer.wrap_act(act, parts)
  return registry.assemble(config, loss_fn, act, uses_teacher=True,
                           uses_reward=False)


def build_gkd(config: GKDConfig, parts: registry.Parts) -> base.Agent:
  loss_fn, act = make_distillation_loss(config, parts), make_gkd_act(
      config, parts)
  if parts.teacher_tokenizer is not None:
    act = cross_tokenizer.wrap_act(act, parts)
  return registry.assemble(config, loss_fn, act, uses_teacher=True,
                           uses_reward=False)


registry.register("supervised_kd", SupervisedKDConfig, build_supervised_kd)
registry.register("gkd", GKDConfig, build_gkd)
