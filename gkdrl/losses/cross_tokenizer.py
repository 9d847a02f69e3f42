"""Divergences between a teacher and a student with different vocabularies.

ULD (Boizard et al. 2024, "Towards Cross-Tokenizer Distillation: the
Universal Logit Distillation Loss", https://arxiv.org/abs/2402.12030): the
Wasserstein-1 distance between the two distributions after sorting each in
decreasing order and padding the shorter with zeros,

    ULD(P, Q) = sum_i |p_(i) - q_(i)|,

which needs no correspondence between the vocabularies. It compares the
shapes of the distributions only (which token gets the mass is ignored),
so it is a weak, approximate signal.

`aligned_divergence` adds the exact part where one exists (the idea of
TRL's GOLD): at positions where both tokenizations produce the same token
string from the same text prefix (see `gkdrl.tasks.token_alignment`), the
teacher's distribution over the tokens both vocabularies share is mapped
onto the student's ids, the rest of each side's mass forms one tail bucket,
and the forward KL of those buckets is exact on the shared tokens; ULD is
used at the other positions.
"""

import chex
import jax
import jax.numpy as jnp

from gkdrl import validation

Array = jax.Array
_EMPTY_LOGP = -1e4


def uld(student_logits: Array, teacher_logits: Array, *,
        student_temperature: float = 1.0,
        teacher_temperature: float = 1.0) -> Array:
  """ULD: sum_i |sorted p_i - sorted q_i| per position.

  Args:
    student_logits: `[..., V_s]` student logits.
    teacher_logits: `[..., V_t]` teacher logits (V_t may differ from V_s).
    student_temperature: divides the student logits, > 0.
    teacher_temperature: divides the teacher logits, > 0.

  Returns:
    `[...]` float32 values in [0, 2]; 0 when one sorted distribution equals
    the other.
  """
  chex.assert_equal_shape_prefix([student_logits, teacher_logits],
                                 student_logits.ndim - 1)
  validation.check_positive("student_temperature", student_temperature)
  validation.check_positive("teacher_temperature", teacher_temperature)
  q = jax.nn.softmax(student_logits.astype(jnp.float32)
                     / student_temperature, axis=-1)
  p = jax.nn.softmax(teacher_logits.astype(jnp.float32)
                     / teacher_temperature, axis=-1)
  q = -jnp.sort(-q, axis=-1)  # [..., V_s] decreasing
  p = -jnp.sort(-p, axis=-1)  # [..., V_t] decreasing
  width = max(q.shape[-1], p.shape[-1])
  pad = lambda x: jnp.pad(  # noqa: E731
      x, [(0, 0)] * (x.ndim - 1) + [(0, width - x.shape[-1])])
  return jnp.sum(jnp.abs(pad(p) - pad(q)), axis=-1)


def shared_bucket_kl(student_logits: Array, teacher_logits: Array,
                     student_ids: Array, teacher_ids: Array) -> Array:
  """KL(P || Q) over the shared tokens plus one tail bucket, per position.

  Args:
    student_logits: `[..., V_s]`.
    teacher_logits: `[..., V_t]`.
    student_ids: `[S]` int32 student ids of the tokens both vocabularies
      hold.
    teacher_ids: `[S]` int32 teacher ids of the same tokens, in order.

  Returns:
    `[...]` float32; the exact forward KL when every token is shared.
  """
  chex.assert_equal_shape([student_ids, teacher_ids])
  log_q = jax.nn.log_softmax(student_logits.astype(jnp.float32))
  log_p = jax.nn.log_softmax(teacher_logits.astype(jnp.float32))
  q_shared = jnp.take(log_q, student_ids, axis=-1)  # [..., S]
  p_shared = jnp.take(log_p, teacher_ids, axis=-1)  # [..., S]

  def tail(log_x, ids):
    outside = jnp.ones(log_x.shape[-1], bool).at[ids].set(False)
    if not log_x.shape[-1] > ids.shape[0]:
      return jnp.full(log_x.shape[:-1] + (1,), _EMPTY_LOGP)
    return jnp.maximum(jax.nn.logsumexp(
        jnp.where(outside, log_x, -jnp.inf), axis=-1, keepdims=True),
                       _EMPTY_LOGP)

  log_q = jnp.concatenate([q_shared, tail(log_q, student_ids)], axis=-1)
  log_p = jnp.concatenate([p_shared, tail(log_p, teacher_ids)], axis=-1)
  return jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1)


def aligned_divergence(student_logits: Array, teacher_logits: Array,
                       exact: Array, student_ids: Array,
                       teacher_ids: Array) -> Array:
  """Shared-token KL where the tokenizations agree, ULD elsewhere.

  Args:
    student_logits: `[B, T, V_s]` at the student's positions.
    teacher_logits: `[B, T, V_t]` at the teacher positions aligned to them
      (`gkdrl.tasks.token_alignment.align_offsets`).
    exact: `[B, T]` bool, True where both predict the same token string
      from the same text prefix.
    student_ids: `[S]` student ids of the tokens both vocabularies hold.
    teacher_ids: `[S]` their teacher ids.

  Returns:
    `[B, T]` float32 per-position values (mask and reduce them).
  """
  chex.assert_rank([student_logits, teacher_logits, exact], [3, 3, 2])
  chex.assert_equal_shape_prefix([student_logits, teacher_logits, exact], 2)
  kl = shared_bucket_kl(student_logits, teacher_logits, student_ids,
                        teacher_ids)  # [B, T]
  return jnp.where(exact, kl, uld(student_logits, teacher_logits))
