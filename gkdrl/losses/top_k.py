"""Divergences to a teacher known only by its top-k tokens, plus a tail.

The teacher's distribution P over V tokens is kept as its k most likely
tokens S (ids and log-probabilities, `[..., k]`); the rest is one bucket.
The student's Q is coarse-grained on the same partition:

    P_k = (p(s_1), ..., p(s_k), 1 - sum_{s in S} p(s))
    Q_k = (q(s_1), ..., q(s_k), 1 - sum_{s in S} q(s))

and the divergence D(P_k || Q_k) over these k + 1 buckets replaces
D(P || Q). It is exact at k = V (the tail is empty and dropped). For
k < V it is the divergence of the coarse-grained distributions: for every
f-divergence (forward and reverse KL, JSD, the skew KLs, TVD) it is a lower
bound of the full one by the data-processing inequality, with equality when
q / p is constant on the tail; it falls short by how differently the two
spread their tail mass, which shrinks as the teacher gets more peaked or k
grows. Its gradient moves the student's mass on the support exactly and its
tail mass as a whole, never its shape inside the tail.

Temperatures: the teacher's temperature is applied before its top-k is
taken (`top_k_teacher`), the student's inside `top_k_divergence`.

Only the `[..., k]` teacher arrays enter the loss; the student side still
reads its `[..., V]` logits, whose tail mass is a logsumexp over the
complement of the support (exact, not 1 - sum, which loses a small tail to
rounding). The teacher's tail, from its k log-probabilities only, is
log(1 - sum exp) in the stable log1mexp form.
"""

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp

from gkdrl import validation
from gkdrl.losses import divergences
from gkdrl.losses import reductions

Array = jax.Array

# As objectives.DEFAULT_DISTILLATION_BETA (which imports this module).
DEFAULT_DISTILLATION_BETA = 0.5

# A log-probability standing for "no mass": exp() of it is exactly 0 in
# float32, and differences of two of them are 0, not NaN as with -inf.
LOG_ZERO = -1e30


class TopKTeacher(NamedTuple):
  """The teacher at each position as its top-k support and a tail."""
  ids: Array  # [..., k] int32, most likely first
  log_probs: Array  # [..., k] float32 log-probabilities of the full softmax
  tail_log_prob: Array  # [...] float32 log of the mass off the support


def top_k_teacher(teacher_logits: Array, k: int, *,
                  temperature: float = 1.0) -> TopKTeacher:
  """The teacher's k most likely tokens, their log-probabilities and the
  log-mass of the rest, all without gradient.

  The tail is a logsumexp over the complement of the support, exact even
  when it is below float32's resolution next to 1 (about 6e-8), where
  log(1 - sum of the k probabilities) would round to log(0).

  Args:
    teacher_logits: `[..., V]` teacher logits.
    k: number of tokens kept, 1 <= k <= V.
    temperature: divides the logits before the softmax (and so before the
      top-k), > 0.

  Returns:
    A `TopKTeacher` (unpacks as ids, log_probs, tail_log_prob); the tail is
    LOG_ZERO when k = V.
  """
  vocab = teacher_logits.shape[-1]
  validation.check_int("teacher_top_k", k, 1, vocab)
  validation.check_positive("teacher_temperature", temperature)
  log_p = jax.nn.log_softmax(
      jax.lax.stop_gradient(teacher_logits).astype(jnp.float32)
      / temperature, axis=-1)  # [..., V]
  log_probs, ids = jax.lax.top_k(log_p, k)  # [..., k] each
  ids = ids.astype(jnp.int32)
  if k == vocab:
    return TopKTeacher(ids, log_probs, jnp.full(log_p.shape[:-1], LOG_ZERO))
  tail = jax.nn.logsumexp(jnp.where(_support_mask(ids, vocab), -jnp.inf,
                                    log_p), axis=-1)  # [...]
  return TopKTeacher(ids, log_probs, jnp.maximum(tail, LOG_ZERO))


def _support_mask(ids: Array, vocab: int) -> Array:
  """`[..., V]` bool, True at the ids `[..., k]` of each row."""
  k = ids.shape[-1]
  flat_ids = ids.reshape(-1, k)  # [N, k]
  rows = jnp.arange(flat_ids.shape[0])[:, None]
  return jnp.zeros((flat_ids.shape[0], vocab), bool).at[
      rows, flat_ids].set(True).reshape(ids.shape[:-1] + (vocab,))


def _log1mexp(x: Array) -> Array:
  """log(1 - exp(x)) for x <= 0, accurate at both ends (Maechler 2012).

  Double-where: at x = 0 (no tail) the result is LOG_ZERO and the
  gradient 0, not -inf and NaN.
  """
  x = jnp.minimum(x, 0.0)
  empty = x > -1e-30
  safe = jnp.where(empty, -1.0, x)
  value = jnp.where(safe > -jnp.log(2.0), jnp.log(-jnp.expm1(safe)),
                    jnp.log1p(-jnp.exp(safe)))
  return jnp.where(empty, LOG_ZERO, jnp.maximum(value, LOG_ZERO))


def _student_buckets(student_logits, teacher_ids, temperature
                     ) -> tuple[Array, Array]:
  """Student log-probabilities on the support `[..., k]` and of its
  complement `[...]` (LOG_ZERO when the support is the whole vocabulary)."""
  log_q = jax.nn.log_softmax(
      student_logits.astype(jnp.float32) / temperature, axis=-1)  # [..., V]
  on_support = jnp.take_along_axis(log_q, teacher_ids, axis=-1)  # [..., k]
  vocab, k = log_q.shape[-1], teacher_ids.shape[-1]
  if k == vocab:
    return on_support, jnp.full(log_q.shape[:-1], LOG_ZERO)
  in_support = _support_mask(teacher_ids, vocab)  # [..., V]
  # Finite fill: with k < V the complement is never empty, so the fill only
  # keeps the support's entries out of the logsumexp.
  tail = jax.nn.logsumexp(jnp.where(in_support, -jnp.inf, log_q), axis=-1)
  return on_support, jnp.maximum(tail, LOG_ZERO)


def bucket_log_probs(student_logits: Array, teacher_ids: Array,
                     teacher_log_probs: Array, *,
                     teacher_tail_log_prob: Array | None = None,
                     student_temperature: float = 1.0
                     ) -> tuple[Array, Array]:
  """(log Q_k, log P_k), each `[..., k + 1]` (`[..., V]` when k = V).

  Args:
    student_logits: `[..., V]` student (Q) logits.
    teacher_ids: `[..., k]` int ids of the teacher's support (distinct).
    teacher_log_probs: `[..., k]` the teacher's log-probabilities on them.
    teacher_tail_log_prob: `[...]` the log of the teacher's mass off the
      support (`top_k_teacher` gives it exactly); None derives it as
      log(1 - sum exp(teacher_log_probs)), which rounds a tail below about
      6e-8 to 0 (then a student with tail mass gets a huge reverse KL).
    student_temperature: divides the student logits before the softmax.

  Returns:
    The student's and the teacher's bucket log-probabilities, float32;
    the last bucket is the tail (absent when k = V).
  """
  chex.assert_rank(teacher_ids, student_logits.ndim)
  chex.assert_equal_shape([teacher_ids, teacher_log_probs])
  chex.assert_equal_shape_prefix([student_logits, teacher_ids],
                                 student_logits.ndim - 1)
  validation.check_positive("student_temperature", student_temperature)
  log_p = jnp.maximum(jax.lax.stop_gradient(
      teacher_log_probs).astype(jnp.float32), LOG_ZERO)  # [..., k]
  log_q, log_q_tail = _student_buckets(student_logits, teacher_ids,
                                       student_temperature)
  if teacher_ids.shape[-1] == student_logits.shape[-1]:
    return log_q, log_p
  if teacher_tail_log_prob is None:
    log_p_tail = _log1mexp(jax.nn.logsumexp(log_p, axis=-1))  # [...]
  else:
    chex.assert_equal_shape([teacher_tail_log_prob, teacher_log_probs[..., 0]])
    log_p_tail = jnp.maximum(jax.lax.stop_gradient(
        teacher_tail_log_prob).astype(jnp.float32), LOG_ZERO)  # [...]
  return (jnp.concatenate([log_q, log_q_tail[..., None]], axis=-1),
          jnp.concatenate([log_p, log_p_tail[..., None]], axis=-1))


def top_k_divergence(student_logits: Array, teacher_ids: Array,
                     teacher_log_probs: Array, name: str, *,
                     teacher_tail_log_prob: Array | None = None,
                     student_temperature: float = 1.0, **kwargs) -> Array:
  """D(P_k || Q_k): a divergence of `DIVERGENCES` over the k + 1 buckets.

  Equal to `divergences.divergence(name, ...)` on the full distributions
  when k = V; below it (for these f-divergences) when k < V; see the
  module docstring. The teacher temperature was applied by
  `top_k_teacher`, so only the student's is taken here.

  Args:
    student_logits: `[..., V]` student (Q) logits.
    teacher_ids: `[..., k]` int ids of the teacher's top-k tokens.
    teacher_log_probs: `[..., k]` their teacher log-probabilities (no
      gradient is taken).
    name: a name of `gkdrl.losses.DIVERGENCES`.
    teacher_tail_log_prob: `[...]` log of the teacher's mass off the
      support, as in `bucket_log_probs` (None: from the k log-probs).
    student_temperature: divides the student logits before the softmax.
    **kwargs: the divergence's own parameters (beta, normalized, skew).

  Returns:
    `[...]` float32 divergences.
  """
  if "teacher_temperature" in kwargs:
    raise ValueError("top_k_divergence takes no teacher_temperature; apply "
                     "it in top_k_teacher, before the top-k.")
  log_q, log_p = bucket_log_probs(
      student_logits, teacher_ids, teacher_log_probs,
      teacher_tail_log_prob=teacher_tail_log_prob,
      student_temperature=student_temperature)
  # Bucket log-probabilities are normalised, so as logits their softmax is
  # themselves: every divergence applies unchanged.
  return divergences.divergence(name, log_q, log_p, **kwargs)


def top_k_distillation_loss(student_logits: Array, teacher: TopKTeacher,
                            mask: Array, *, divergence: str = "jsd",
                            reduction: str = "sequence", **divergence_kwargs
                            ) -> tuple[Array, dict[str, Array]]:
  """`distillation_loss` (paper Eq. 2) against a top-k teacher.

      loss = reduce_{b, t}( D(P_k(. | y_<t, x) || Q_k(. | y_<t, x)) )

  Args:
    student_logits: `[B, T, V]` student logits at the completion positions.
    teacher: `top_k_teacher`'s `[B, T, k]` ids and log-probabilities and
      `[B, T]` tail log-masses.
    mask: `[B, T]` 0/1 or bool, 1 at valid completion tokens.
    divergence: a name of `DIVERGENCES`.
    reduction: "sequence", "token" or "sum".
    **divergence_kwargs: beta / normalized / skew and student_temperature
      (a teacher_temperature is ignored: `top_k_teacher` applied it). With
      divergence="jsd" and no beta, beta = 0.5.

  Returns:
    (loss, metrics) with "loss/divergence" and "kl/teacher" (the bucketed
    reverse KL to the teacher, for logging).
  """
  chex.assert_rank([student_logits, mask], [3, 2])
  chex.assert_equal_shape_prefix([student_logits, teacher.ids, mask], 2)
  if divergence == "jsd":
    divergence_kwargs.setdefault("beta", DEFAULT_DISTILLATION_BETA)
  values, kl = divergence_and_teacher_kl(divergence, divergence_kwargs)(
      student_logits, teacher)  # [B, T] each
  loss = reductions.masked_reduce(values, mask, reduction=reduction)
  return loss, {"loss/divergence": loss,
                "kl/teacher": reductions.masked_reduce(kl, mask,
                                                       reduction=reduction)}


def divergence_and_teacher_kl(divergence: str, divergence_kwargs: dict):
  """`fn(student_logits, teacher: TopKTeacher) -> (div, kl)`, both `[...]`:
  the bucketed divergence and, for logging, the bucketed reverse KL from
  the same buckets without a gradient."""
  kwargs = dict(divergence_kwargs)
  student_temperature = kwargs.pop("student_temperature", 1.0)
  kwargs.pop("teacher_temperature", None)  # applied by top_k_teacher

  def fn(student_logits, teacher):
    log_q, log_p = bucket_log_probs(
        student_logits, teacher.ids, teacher.log_probs,
        teacher_tail_log_prob=teacher.tail_log_prob,
        student_temperature=student_temperature)
    div = divergences.divergence(divergence, log_q, log_p, **kwargs)
    kl = divergences.reverse_kl(jax.lax.stop_gradient(log_q), log_p)
    return div, kl

  return fn
