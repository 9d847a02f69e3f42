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
from gkdrl.losses import divergences
from gkdrl.losses import reductions

Array = jax.Array
_EMPTY_LOGP = -1e4
# How the positions of a cross-tokenizer pair are compared: "uld" at every
# position, or "align": the divergence over the shared tokens where the
# tokens coincide, ULD elsewhere.
MODES = ("uld", "align")


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


def shared_bucket_log_probs(logits: Array, ids: Array) -> Array:
  """log-probabilities of the shared tokens plus one tail bucket.

  Args:
    logits: `[..., V]` logits of one model.
    ids: `[S]` int32 ids (in this model's vocabulary) of the tokens both
      vocabularies hold.

  Returns:
    `[..., S + 1]` float32: log p(ids[s]) then log of the remaining mass
    (floored at -1e4, so an empty tail stays finite).
  """
  log_x = jax.nn.log_softmax(logits.astype(jnp.float32))  # [..., V]
  shared = jnp.take(log_x, ids, axis=-1)  # [..., S]
  if not log_x.shape[-1] > ids.shape[0]:
    tail = jnp.full(log_x.shape[:-1] + (1,), _EMPTY_LOGP)
  else:
    outside = jnp.ones(log_x.shape[-1], bool).at[ids].set(False)
    tail = jnp.maximum(jax.nn.logsumexp(
        jnp.where(outside, log_x, -jnp.inf), axis=-1, keepdims=True),
                       _EMPTY_LOGP)  # [..., 1]
  return jnp.concatenate([shared, tail], axis=-1)


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
  log_q = shared_bucket_log_probs(student_logits, student_ids)
  log_p = shared_bucket_log_probs(teacher_logits, teacher_ids)
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


def cross_tokenizer_loss(student_logits: Array, teacher_logits: Array,
                         exact: Array, mask: Array, student_ids: Array,
                         teacher_ids: Array, *, mode: str = "align",
                         divergence: str = "forward_kl",
                         reduction: str = "sequence", **divergence_kwargs
                         ) -> tuple[Array, dict[str, Array]]:
  """Distillation loss across tokenizers, reduced over the completion.

      d_t = D(P_T^shared(. | y_<t) || P_S^shared(. | y_<t))  if exact_t
            ULD(p_S, p_T)                                    otherwise

  where `P^shared` is a model's distribution over the S shared tokens plus
  one tail bucket (`shared_bucket_log_probs`) and D the named divergence
  (temperatures applied to the logits first). `mode="uld"` uses ULD at
  every position. The teacher takes no gradient.

  Args:
    student_logits: `[B, T, V_s]` at the student's completion positions.
    teacher_logits: `[B, T, V_t]` at the teacher positions aligned to them.
    exact: `[B, T]` bool, True where both tokens span the same characters.
    mask: `[B, T]` 1 at valid completion tokens.
    student_ids: `[S]` student ids of the shared tokens.
    teacher_ids: `[S]` their teacher ids.
    mode: one of `MODES`.
    divergence: a name of `gkdrl.losses.DIVERGENCES` (mode "align").
    reduction: "sequence", "token" or "sum".
    **divergence_kwargs: the divergence's parameters and the temperatures.

  Returns:
    (loss, metrics): "loss/divergence"; "cross_tokenizer/exact_fraction"
    (valid positions whose tokens coincide); with mode "align" also
    "loss/aligned_divergence" and "loss/uld", token means over the exact
    and the other valid positions.
  """
  chex.assert_rank([student_logits, teacher_logits, exact, mask],
                   [3, 3, 2, 2])
  chex.assert_equal_shape_prefix(
      [student_logits, teacher_logits, exact, mask], 2)
  validation.check_choice("mode", mode, MODES)
  kwargs = dict(divergence_kwargs)
  s_temp = kwargs.pop("student_temperature", 1.0)
  t_temp = kwargs.pop("teacher_temperature", 1.0)
  student_logits = student_logits.astype(jnp.float32) / s_temp
  teacher_logits = jax.lax.stop_gradient(
      teacher_logits.astype(jnp.float32) / t_temp)
  mask = mask.astype(jnp.float32)
  exact = exact.astype(bool) & (mask > 0)
  far = uld(student_logits, teacher_logits)  # [B, T]
  metrics = {"cross_tokenizer/exact_fraction": jnp.sum(exact) / jnp.maximum(
      jnp.sum(mask), 1.0)}
  if mode == "uld":
    values = far
  else:
    near = divergences.divergence(
        divergence, shared_bucket_log_probs(student_logits, student_ids),
        shared_bucket_log_probs(teacher_logits, teacher_ids),
        **kwargs)  # [B, T]
    values = jnp.where(exact, near, far)
    token_mean = lambda v, m: jnp.sum(v * m) / jnp.maximum(jnp.sum(m), 1.0)
    metrics["loss/aligned_divergence"] = token_mean(near, exact)
    metrics["loss/uld"] = token_mean(far, mask * (1.0 - exact))
  loss = reductions.masked_reduce(values, mask, reduction=reduction)
  metrics["loss/divergence"] = loss
  return loss, metrics
