"""Sequence objectives: distillation, and GKD combined with RL (paper Eq. 5).

    J(theta) = (1 - alpha) * E_{y ~ student}[ r(y) ]
               - alpha * E_{y ~ sg(student)}[ D(teacher || student)(y | x) ]

`gkd_rl_loss` returns -J as a loss to minimise, optionally plus
ref_kl_coef * KL(student || reference), the KL-to-initial-policy penalty of
ordinary RLHF, which is separate from alpha.

See "On-Policy Distillation of Language Models: Learning from Self-Generated
Mistakes", Agarwal et al., ICLR 2024 (https://arxiv.org/abs/2306.13649),
Eq. 2 (sequence-averaged divergence) and Eq. 5 (RL + GKD).
"""

import chex
import jax
import jax.numpy as jnp

from gkdrl import validation
from gkdrl.losses import divergences
from gkdrl.losses import policy_gradient
from gkdrl.losses import reductions
from gkdrl.losses import row_chunks
from gkdrl.losses import top_k

Array = jax.Array

KL_MODES = ("analytic", "sampled")
# Default beta when distillation_loss is asked for "jsd" without one: the
# symmetric JSD, as in Hugging Face TRL's GKDTrainer.
DEFAULT_DISTILLATION_BETA = 0.5


def _check_logits(student_logits, teacher_logits, mask) -> None:
  chex.assert_rank([student_logits, mask], [3, 2])
  chex.assert_equal_shape_prefix([student_logits, mask], 2)
  if isinstance(teacher_logits, top_k.TopKTeacher):
    chex.assert_equal_shape_prefix([student_logits, teacher_logits.ids], 2)
  elif teacher_logits is not None:
    chex.assert_equal_shape([student_logits, teacher_logits])


def temperature_kwargs(divergence_kwargs) -> dict[str, float]:
  """The temperature entries of divergence keyword arguments."""
  return {k: divergence_kwargs[k]
          for k in ("student_temperature", "teacher_temperature")
          if k in divergence_kwargs}


def divergence_and_teacher_kl(divergence: str, divergence_kwargs: dict):
  """`fn(student_logits, teacher_logits) -> (div, kl)`, both `[...]`.

  `div` is the distillation divergence; `kl` the reverse KL to the teacher
  for logging, computed from the same logits without a gradient.
  """
  temperatures = temperature_kwargs(divergence_kwargs)

  def fn(student_logits, teacher_logits):
    div = divergences.divergence(divergence, student_logits, teacher_logits,
                                 **divergence_kwargs)
    return div, _teacher_kl(student_logits, teacher_logits, temperatures)

  return fn


def divergence_kl_and_gradient(divergence: str, divergence_kwargs: dict):
  """`fn(student_logits, teacher_logits) -> (div, kl, grad)`.

  `div` and `kl` as `divergence_and_teacher_kl`; `grad` `[..., V]` is the
  gradient of `div` with respect to the student's logits
  (`divergences.divergence_and_gradient`, in closed form where it has one).
  """
  temperatures = temperature_kwargs(divergence_kwargs)

  def fn(student_logits, teacher_logits):
    div, grad = divergences.divergence_and_gradient(
        divergence, student_logits, teacher_logits, **divergence_kwargs)
    kl = _teacher_kl(student_logits, teacher_logits, temperatures)
    return div, kl, grad

  return fn


def distillation_loss(student_logits: Array, teacher_logits: Array,
                      mask: Array, *, divergence: str = "jsd",
                      reduction: str = "sequence",
                      chunk_size: int | None = None, **divergence_kwargs
                      ) -> tuple[Array, dict[str, Array]]:
  """Token-level distillation loss averaged over sequences (paper Eq. 2).

      loss = reduce_{b, t}( D(p_T(. | y_<t, x) || p_S(. | y_<t, x)) )

  Used by supervised KD (forward KL on dataset targets) and GKD (any
  divergence on student samples).

  Args:
    student_logits: `[B, T, V]` student logits at the completion positions.
    teacher_logits: `[B, T, V]` teacher logits (no gradient is taken).
    mask: `[B, T]` 0/1 or bool, 1 at valid completion tokens.
    divergence: a name of `DIVERGENCES`.
    reduction: "sequence" (Eq. 2), "token" or "sum".
    chunk_size: positions per chunk of the memory-lean path (below); None
      picks about 1M logits per chunk, 0 always takes the plain path.
    **divergence_kwargs: beta / normalized / skew and the temperatures. With
      divergence="jsd" and no beta, beta = 0.5.

  When the logits hold more than one chunk of positions and the divergence
  settings are Python numbers, the divergence and its gradient are computed
  a chunk at a time (`gkdrl.losses.row_chunks`): besides the inputs, only
  the gradient with respect to the student's logits is ever a `[B, T, V]`
  array. That path supports reverse-mode differentiation (and vmap) only;
  `chunk_size=0` gives the plain one, which any JAX transformation can use.

  Returns:
    (loss, metrics) with "loss/divergence" and "kl/teacher" (reverse KL to
    the teacher, for logging).
  """
  _check_logits(student_logits, teacher_logits, mask)
  if chunk_size is not None:
    validation.check_int("chunk_size", chunk_size, 0)
  if divergence == "jsd":
    divergence_kwargs.setdefault("beta", DEFAULT_DISTILLATION_BETA)
  teacher_logits = jax.lax.stop_gradient(teacher_logits)
  values, kl = _divergence_values(student_logits, teacher_logits,
                                  divergence, divergence_kwargs,
                                  chunk_size)  # [B, T] each
  loss = reductions.masked_reduce(values, mask, reduction=reduction)
  return loss, {"loss/divergence": loss,
                "kl/teacher": reductions.masked_reduce(kl, mask,
                                                       reduction=reduction)}


def _divergence_values(student_logits, teacher_logits, divergence,
                       divergence_kwargs, chunk_size):
  """(divergence, teacher KL) `[B, T]` each, by row chunks when they pay.

  The memory-lean row-chunk path is taken when the logits span more than
  one chunk (None: `row_chunks.default_chunk_rows(V)`; 0: never) and the
  divergence settings are Python numbers.
  """
  fn = divergence_and_teacher_kl(divergence, divergence_kwargs)
  batch, length, vocab = student_logits.shape
  if chunk_size is None:
    chunk_size = row_chunks.default_chunk_rows(vocab)
  static = all(map(validation.is_static_number, divergence_kwargs.values()))
  if chunk_size and static and batch * length > chunk_size:
    return row_chunks.per_position_values(
        fn, student_logits, teacher_logits, chunk_size,
        with_gradient=divergence_kl_and_gradient(divergence,
                                                 divergence_kwargs))
  return fn(student_logits, teacher_logits)


def _take(log_probs: Array, actions: Array) -> Array:
  """log_probs[b, t, actions[b, t]]: `[B, T, V]`, `[B, T]` -> `[B, T]`."""
  return jnp.take_along_axis(log_probs, actions[..., None], axis=-1)[..., 0]


def _analytic_loss(student_logits, teacher_logits, mask, pg_loss, *, alpha,
                   use_teacher, divergence, divergence_kwargs, reduction,
                   chunk_size):
  """Eq. 5 as written: (1 - alpha) L_pg + alpha reduce(D(teacher || student)).

  Returns (total, div_loss, kl `[B, T]` or None): kl is the reverse KL to
  the teacher for logging, from the same per-position function.
  """
  if not use_teacher:
    return (1.0 - alpha) * pg_loss, jnp.zeros((), jnp.float32), None
  if isinstance(teacher_logits, top_k.TopKTeacher):
    values, kl = top_k.divergence_and_teacher_kl(
        divergence, divergence_kwargs)(student_logits, teacher_logits)
    div_loss = reductions.masked_reduce(values, mask, reduction=reduction)
    return (1.0 - alpha) * pg_loss + alpha * div_loss, div_loss, kl
  values, kl = _divergence_values(student_logits, teacher_logits,
                                  divergence, divergence_kwargs,
                                  chunk_size)  # [B, T] each
  div_loss = reductions.masked_reduce(values, mask, reduction=reduction)
  return (1.0 - alpha) * pg_loss + alpha * div_loss, div_loss, kl


def _sampled_loss(student_logits, teacher_logits, student_log_probs, actions,
                  logp_a, advantages, mask, *, alpha, use_teacher,
                  temperatures, reduction):
  """The divergence as a per-token advantage: -alpha * k1_t, with
  k1_t = log p_S(a_t) - log p_T(a_t) (no gradient through it).

  Returns (total, div_loss).
  """
  if use_teacher:
    st = temperatures.get("student_temperature", 1.0)
    tt = temperatures.get("teacher_temperature", 1.0)
    if validation.is_static_number(st) and st == 1.0:
      student_logp_t = _take(student_log_probs, actions)  # [B, T]
    else:
      student_logp_t = _take(jax.nn.log_softmax(
          student_logits.astype(jnp.float32) / st, axis=-1), actions)
    teacher_logp_t = _take(jax.nn.log_softmax(
        teacher_logits.astype(jnp.float32) / tt, axis=-1), actions)
    k1 = jax.lax.stop_gradient(divergences.sampled_kl(
        student_logp_t, teacher_logp_t, estimator="k1"))  # [B, T]
  else:
    k1 = jnp.zeros_like(logp_a)
  div_loss = reductions.masked_reduce(k1, mask, reduction=reduction)
  token_advantages = (1.0 - alpha) * advantages[:, None] - alpha * k1
  total = reductions.masked_reduce(
      -jax.lax.stop_gradient(token_advantages) * logp_a, mask,
      reduction=reduction)
  return total, div_loss


def _student_as_teacher(alpha, student_logits, teacher_logits):
  """The teacher input, replaced by the student itself where alpha = 0."""
  student_logits = jax.lax.stop_gradient(student_logits)
  if not isinstance(teacher_logits, top_k.TopKTeacher):
    return jnp.where(alpha == 0.0, student_logits, teacher_logits)
  log_q, _ = top_k.bucket_log_probs(
      student_logits, teacher_logits.ids, teacher_logits.log_probs)
  k = teacher_logits.ids.shape[-1]
  tail = (log_q[..., k] if log_q.shape[-1] > k
          else teacher_logits.tail_log_prob)
  return top_k.TopKTeacher(
      teacher_logits.ids,
      jnp.where(alpha == 0.0, log_q[..., :k], teacher_logits.log_probs),
      jnp.where(alpha == 0.0, tail, teacher_logits.tail_log_prob))


def _teacher_kl(student_logits, teacher_logits, temperatures) -> Array:
  """`[B, T]` reverse KL to the teacher (bucketed for a top-k one)."""
  if isinstance(teacher_logits, top_k.TopKTeacher):
    return top_k.divergence_and_teacher_kl("reverse_kl", temperatures)(
        jax.lax.stop_gradient(student_logits), teacher_logits)[1]
  return divergences.reverse_kl(jax.lax.stop_gradient(student_logits),
                                teacher_logits, **temperatures)


def _check_gkd_rl_args(student_logits, teacher_logits, actions, mask,
                       rewards, *, alpha, beta, kl_mode, divergence,
                       ref_kl_coef, chunk_size) -> tuple[bool, bool]:
  """Checks gkd_rl_loss's arguments; returns (use_teacher, use_rewards).

  A static alpha of 0 needs no teacher, of 1 no rewards; a traced alpha
  needs both.
  """
  _check_logits(student_logits, teacher_logits, mask)
  chex.assert_equal_shape([actions, mask])
  validation.check_unit_interval("alpha", alpha)
  validation.check_unit_interval("beta", beta)
  validation.check_choice("kl_mode", kl_mode, KL_MODES)
  validation.check_choice("divergence", divergence, divergences.DIVERGENCES)
  validation.check_non_negative("ref_kl_coef", ref_kl_coef)
  if chunk_size is not None:
    validation.check_int("chunk_size", chunk_size, 0)
  static_alpha = validation.is_static_number(alpha)
  use_teacher = not (static_alpha and alpha == 0.0)
  use_rewards = not (static_alpha and alpha == 1.0)
  if (kl_mode == "sampled"
      and isinstance(teacher_logits, top_k.TopKTeacher)):
    raise ValueError("kl_mode='sampled' needs the teacher's full logits, "
                     "not its top-k; a top-k teacher needs "
                     "kl_mode='analytic'.")
  if use_teacher and teacher_logits is None:
    raise ValueError(f"teacher_logits is None but alpha={alpha!r} needs the "
                     "teacher; only alpha=0 runs without it.")
  if use_rewards and rewards is None:
    raise ValueError(f"rewards is None but alpha={alpha!r} needs rewards; "
                     "only alpha=1 runs without them.")
  if rewards is not None:
    chex.assert_shape(rewards, (student_logits.shape[0],))
  return use_teacher, use_rewards


def gkd_rl_loss(student_logits: Array, teacher_logits: Array | None,
                actions: Array, mask: Array, rewards: Array | None, *,
                alpha, divergence: str = "jsd", beta: float = 0.9,
                baseline: str = "mean", group_size: int = 1,
                kl_mode: str = "analytic", ref_logits: Array | None = None,
                ref_kl_coef: float = 0.0, reduction: str = "sequence",
                chunk_size: int | None = None,
                advantages: Array | None = None, **divergence_kwargs
                ) -> tuple[Array, dict[str, Array]]:
  """GKD + RL (paper Eq. 5) as a loss to minimise.

      loss = (1 - alpha) * L_pg + alpha * L_div
             + ref_kl_coef * reduce(KL(student || reference))
      L_pg  = -reduce( sg(r - b) * log p_S(a_t) )        (REINFORCE)
      L_div = reduce( D(teacher || student) )             (kl_mode analytic)

  With kl_mode="sampled" the divergence is instead folded into a per-token
  advantage (as in later on-policy-distillation work):

      loss = -reduce( sg((1 - alpha) (r - b) - alpha * k1_t) * log p_S(a_t) ),
      k1_t = log p_S(a_t) - log p_T(a_t),

  which follows the reverse-KL gradient in expectation and needs only the
  teacher's log-probability of the taken token.

  alpha = 1 is pure GKD (rewards may be None and are never read), alpha = 0
  is pure RL (teacher_logits may be None; when given they only feed the
  "kl/teacher" metric). alpha may be a traced scalar (to vmap over alphas);
  then both inputs are needed, and at alpha = 0 or 1 the unused one is
  replaced before use, so neither the loss nor its gradient depends on it.

  Args:
    student_logits: `[B, T, V]` student logits at the completion positions.
    teacher_logits: `[B, T, V]` teacher logits, or None when alpha = 0,
      or (kl_mode analytic) a `gkdrl.losses.top_k.TopKTeacher` of `[B, T, k]`
      arrays: then the divergence and "kl/teacher" are over the k + 1
      buckets (`gkdrl.losses.top_k_divergence`), with no row chunking.
    actions: `[B, T]` int sampled completion tokens.
    mask: `[B, T]` 0/1 or bool, 1 at generated tokens (EOS included).
    rewards: `[B]` sequence rewards, or None when alpha = 1.
    alpha: teacher weight in [0, 1] (Python number or traced scalar).
    divergence: a name of `DIVERGENCES` (analytic mode).
    beta: the JSD coefficient (used when divergence="jsd").
    baseline: "none", "mean" or "rloo".
    group_size: consecutive rows sampled from one prompt (for baselines).
    kl_mode: "analytic" or "sampled".
    ref_logits: `[B, T, V]` logits of the reference (initial) student.
    ref_kl_coef: weight of KL(student || reference), >= 0.
    reduction: "sequence", "token" or "sum".
    chunk_size: positions per chunk of the analytic divergence, as in
      `distillation_loss` (None: about 1M logits per chunk; 0: never).
    advantages: `[B]` advantages computed beforehand (over a whole batch of
      which these rows are a micro-batch); None computes them from
      `rewards` with `baseline` and `group_size`.
    **divergence_kwargs: skew / normalized and the temperatures.

  Returns:
    (loss, metrics) with "loss/total", "loss/pg", "loss/divergence",
    "reward/mean" (when rewards are given), "kl/teacher" (when teacher
    logits are given) and "kl/reference" (when reference logits are given).
  """
  use_teacher, use_rewards = _check_gkd_rl_args(
      student_logits, teacher_logits, actions, mask, rewards, alpha=alpha,
      beta=beta, kl_mode=kl_mode, divergence=divergence,
      ref_kl_coef=ref_kl_coef, chunk_size=chunk_size)
  # The sampled mode reads the temperatures without a divergence call.
  for name, value in temperature_kwargs(divergence_kwargs).items():
    validation.check_temperature(name, value)
  static_alpha = validation.is_static_number(alpha)

  metrics = {}
  temperatures = temperature_kwargs(divergence_kwargs)
  if teacher_logits is not None:
    teacher_logits = jax.lax.stop_gradient(teacher_logits)
  given_teacher_logits = teacher_logits
  if rewards is not None:
    metrics["reward/mean"] = jnp.mean(
        jax.lax.stop_gradient(rewards).astype(jnp.float32))
  if not static_alpha:
    # Double-where: at the endpoints the unused input is swapped for a
    # harmless one, so not even a NaN in it reaches the loss or gradient.
    rewards = jnp.where(alpha == 1.0, 0.0, rewards)
    teacher_logits = _student_as_teacher(alpha, student_logits,
                                         teacher_logits)

  # The one log-softmax of the student, shared by both modes.
  student_log_probs = jax.nn.log_softmax(
      student_logits.astype(jnp.float32), axis=-1)  # [B, T, V]
  logp_a = _take(student_log_probs, actions)  # [B, T]
  if use_rewards and advantages is not None:
    chex.assert_shape(advantages, (student_logits.shape[0],))
    advantages = jax.lax.stop_gradient(advantages.astype(jnp.float32))
    if not static_alpha:
      advantages = jnp.where(alpha == 1.0, 0.0, advantages)
  elif use_rewards:
    advantages = policy_gradient.sequence_advantages(
        rewards, baseline=baseline, group_size=group_size)  # [B]
  else:
    advantages = jnp.zeros(student_logits.shape[:1], jnp.float32)  # [B]
  pg_loss = reductions.masked_reduce(
      -advantages[:, None] * logp_a, mask, reduction=reduction)

  kl = None
  if kl_mode == "analytic":
    if divergence == "jsd":
      divergence_kwargs.setdefault("beta", beta)
    total, div_loss, kl = _analytic_loss(
        student_logits, teacher_logits, mask, pg_loss, alpha=alpha,
        use_teacher=use_teacher, divergence=divergence,
        divergence_kwargs=divergence_kwargs, reduction=reduction,
        chunk_size=chunk_size)
  else:
    total, div_loss = _sampled_loss(
        student_logits, teacher_logits, student_log_probs, actions, logp_a,
        advantages, mask, alpha=alpha, use_teacher=use_teacher,
        temperatures=temperatures, reduction=reduction)
  if given_teacher_logits is not None:
    if kl is None or not static_alpha:
      # The metric reads the teacher given, not the one swapped in.
      kl = _teacher_kl(student_logits, given_teacher_logits, temperatures)
    metrics["kl/teacher"] = reductions.masked_reduce(kl, mask,
                                                     reduction=reduction)

  if ref_logits is not None:
    chex.assert_equal_shape([student_logits, ref_logits])
    ref_kl = reductions.masked_reduce(
        divergences.reverse_kl(student_logits,
                               jax.lax.stop_gradient(ref_logits)),
        mask, reduction=reduction)
    total = total + ref_kl_coef * ref_kl
    metrics["kl/reference"] = jax.lax.stop_gradient(ref_kl)

  metrics.update({
      "loss/total": total,
      "loss/pg": jax.lax.stop_gradient(pg_loss),
      "loss/divergence": jax.lax.stop_gradient(div_loss),
  })
  return total, metrics
