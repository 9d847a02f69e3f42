"""Position-wise divergences between a teacher P and a student Q.

Every divergence takes unnormalised logits `[..., V]` for both sides and
returns one value per position, `[...]`, summing exactly over the vocabulary.
P = teacher, Q = student, so

    forward KL = KL(P || Q)   mode covering (maximum likelihood),
    reverse KL = KL(Q || P)   mode seeking.

All arithmetic is float32 in log space whatever the input dtype. Masked
logits, -1e9 or -inf, are supported: a token to which both sides give zero
mass adds 0 to every divergence, with a zero (never NaN) gradient, and
0 * log 0 counts as 0, so forward KL ignores a token the teacher masks. A
divergence that is truly infinite stays +inf: reverse KL where the student
puts mass on a token the teacher masks with -inf (forward KL, the other way
round). JSD, the skew KLs and total variation stay finite whatever is
masked, since their mixture has mass wherever either side does. A row whose
logits are all -inf has no distribution (NaN). Each side has its own
temperature, which divides that side's logits before the softmax.

See "On-Policy Distillation of Language Models: Learning from Self-Generated
Mistakes", Agarwal et al., ICLR 2024 (https://arxiv.org/abs/2306.13649), and
DistiLLM, Ko et al., ICML 2024 (https://arxiv.org/abs/2402.03898).
"""

from collections.abc import Callable

import chex
import jax
import jax.numpy as jnp

from gkdrl import validation

Array = jax.Array


def _log_probs(student_logits, teacher_logits, student_temperature,
               teacher_temperature) -> tuple[Array, Array]:
  """Float32 log-probabilities `[..., V]` of student (Q) and teacher (P)."""
  chex.assert_equal_shape([student_logits, teacher_logits])
  validation.check_temperature("student_temperature", student_temperature)
  validation.check_temperature("teacher_temperature", teacher_temperature)
  log_q = jax.nn.log_softmax(
      student_logits.astype(jnp.float32) / student_temperature, axis=-1)
  log_p = jax.nn.log_softmax(
      teacher_logits.astype(jnp.float32) / teacher_temperature, axis=-1)
  return log_q, log_p


def _kl(log_a: Array, log_b: Array) -> Array:
  """KL(A || B) = sum_v a (log a - log b) from log-probabilities `[..., V]`.

  Terms with a = 0 (log_a = -inf, a masked token) are 0, with a zero
  gradient: the difference is replaced before it can be inf - inf = NaN.
  """
  no_mass = log_a == -jnp.inf
  diff = jnp.where(no_mass, 0.0, log_a - log_b)
  return jnp.sum(jnp.exp(log_a) * diff, axis=-1)


def _log_mixture(log_a: Array, log_b: Array, weight) -> Array:
  """log(weight * a + (1 - weight) * b), computed in log space.

  Building the mixture in probability space and then taking its log loses
  all precision for small probabilities; logsumexp keeps it.
  """
  if validation.is_static_number(weight):
    if weight == 0.0:
      return log_b
    if weight == 1.0:
      return log_a
  # Double-where: at traced endpoints log(0) = -inf would reach the
  # gradient; clamp the weights, then select the exact endpoint values.
  w = jnp.clip(jnp.asarray(weight, jnp.float32), 1e-30, 1.0 - 1e-7)
  # logaddexp(-inf, -inf) is -inf with a NaN gradient: where both sides are
  # masked, mix zeros instead and put the -inf back afterwards.
  both_masked = (log_a == -jnp.inf) & (log_b == -jnp.inf)
  safe_a = jnp.where(both_masked, 0.0, log_a)
  safe_b = jnp.where(both_masked, 0.0, log_b)
  mixed = jnp.logaddexp(jnp.log(w) + safe_a, jnp.log1p(-w) + safe_b)
  mixed = jnp.where(both_masked, -jnp.inf, mixed)
  mixed = jnp.where(weight == 0.0, log_b, mixed)
  return jnp.where(weight == 1.0, log_a, mixed)


def forward_kl(student_logits: Array, teacher_logits: Array, *,
               student_temperature: float = 1.0,
               teacher_temperature: float = 1.0) -> Array:
  """Forward KL, KL(P || Q) = sum_v p(v) (log p(v) - log q(v)).

  The token-level loss of supervised KD (paper Eq. 3) and of GKD with
  forward KL.

  Args:
    student_logits: `[..., V]` student (Q) logits.
    teacher_logits: `[..., V]` teacher (P) logits.
    student_temperature: divides the student logits before the softmax.
    teacher_temperature: divides the teacher logits before the softmax.

  Returns:
    `[...]` float32 divergences.
  """
  log_q, log_p = _log_probs(student_logits, teacher_logits,
                            student_temperature, teacher_temperature)
  return _kl(log_p, log_q)


def reverse_kl(student_logits: Array, teacher_logits: Array, *,
               student_temperature: float = 1.0,
               teacher_temperature: float = 1.0) -> Array:
  """Reverse KL, KL(Q || P) = sum_v q(v) (log q(v) - log p(v)).

  Args:
    student_logits: `[..., V]` student (Q) logits.
    teacher_logits: `[..., V]` teacher (P) logits.
    student_temperature: divides the student logits before the softmax.
    teacher_temperature: divides the teacher logits before the softmax.

  Returns:
    `[...]` float32 divergences.
  """
  log_q, log_p = _log_probs(student_logits, teacher_logits,
                            student_temperature, teacher_temperature)
  return _kl(log_q, log_p)


def generalized_jsd(student_logits: Array, teacher_logits: Array, *,
                    beta: float, normalized: bool = False,
                    student_temperature: float = 1.0,
                    teacher_temperature: float = 1.0) -> Array:
  """Generalized Jensen-Shannon divergence (paper Eq. 1).

      JSD(beta) = beta * KL(P || M) + (1 - beta) * KL(Q || M),
      M = beta * P + (1 - beta) * Q.

  At the endpoints the formula itself vanishes; following the paper's
  limits (and Hugging Face TRL), beta = 0 returns forward KL(P || Q) exactly
  and beta = 1 returns reverse KL(Q || P) exactly. Inside (0, 1) the value
  shrinks like beta * KL(P || Q) near 0 and (1 - beta) * KL(Q || P) near 1.

  `normalized=True` (a gkdrl extension, not in the paper) divides by
  beta * (1 - beta) inside (0, 1), so the value tends continuously to
  forward KL as beta -> 0 and to reverse KL as beta -> 1 and the gradient
  scale no longer changes with beta by orders of magnitude.

  Args:
    student_logits: `[..., V]` student (Q) logits.
    teacher_logits: `[..., V]` teacher (P) logits.
    beta: interpolation coefficient in [0, 1] (a Python number or a traced
      scalar).
    normalized: divide by beta * (1 - beta) inside (0, 1).
    student_temperature: divides the student logits before the softmax.
    teacher_temperature: divides the teacher logits before the softmax.

  Returns:
    `[...]` float32 divergences.
  """
  validation.check_unit_interval("beta", beta)
  log_q, log_p = _log_probs(student_logits, teacher_logits,
                            student_temperature, teacher_temperature)
  if validation.is_static_number(beta):
    if beta == 0.0:
      return _kl(log_p, log_q)
    if beta == 1.0:
      return _kl(log_q, log_p)
  log_m = _log_mixture(log_p, log_q, beta)
  jsd = beta * _kl(log_p, log_m) + (1.0 - beta) * _kl(log_q, log_m)
  if normalized:
    jsd = jsd / _jsd_normalizer(beta)
  if validation.is_static_number(beta):
    return jsd
  jsd = jnp.where(beta == 0.0, _kl(log_p, log_q), jsd)
  return jnp.where(beta == 1.0, _kl(log_q, log_p), jsd)


def _jsd_normalizer(beta) -> Array:
  """beta (1 - beta), what `normalized=True` divides JSD(beta) by (floored
  so that it never divides by 0)."""
  return jnp.maximum(beta * (1.0 - beta), 1e-12)


def skew_forward_kl(student_logits: Array, teacher_logits: Array, *,
                    skew: float = 0.1, student_temperature: float = 1.0,
                    teacher_temperature: float = 1.0) -> Array:
  """Skew forward KL, KL(P || skew * P + (1 - skew) * Q) (DistiLLM).

  skew = 0 is forward KL; the mixture keeps the value bounded where the
  student puts almost no mass on a teacher token.

  Args:
    student_logits: `[..., V]` student (Q) logits.
    teacher_logits: `[..., V]` teacher (P) logits.
    skew: mixture weight of the teacher in [0, 1].
    student_temperature: divides the student logits before the softmax.
    teacher_temperature: divides the teacher logits before the softmax.

  Returns:
    `[...]` float32 divergences.
  """
  validation.check_unit_interval("skew", skew)
  log_q, log_p = _log_probs(student_logits, teacher_logits,
                            student_temperature, teacher_temperature)
  return _kl(log_p, _log_mixture(log_p, log_q, skew))


def skew_reverse_kl(student_logits: Array, teacher_logits: Array, *,
                    skew: float = 0.1, student_temperature: float = 1.0,
                    teacher_temperature: float = 1.0) -> Array:
  """Skew reverse KL, KL(Q || (1 - skew) * P + skew * Q) (DistiLLM).

  skew = 0 is reverse KL.

  Args:
    student_logits: `[..., V]` student (Q) logits.
    teacher_logits: `[..., V]` teacher (P) logits.
    skew: mixture weight of the student in [0, 1].
    student_temperature: divides the student logits before the softmax.
    teacher_temperature: divides the teacher logits before the softmax.

  Returns:
    `[...]` float32 divergences.
  """
  validation.check_unit_interval("skew", skew)
  log_q, log_p = _log_probs(student_logits, teacher_logits,
                            student_temperature, teacher_temperature)
  return _kl(log_q, _log_mixture(log_q, log_p, skew))


def total_variation(student_logits: Array, teacher_logits: Array, *,
                    student_temperature: float = 1.0,
                    teacher_temperature: float = 1.0) -> Array:
  """Total variation distance, 0.5 * sum_v |p(v) - q(v)| (f-distill).

  Args:
    student_logits: `[..., V]` student (Q) logits.
    teacher_logits: `[..., V]` teacher (P) logits.
    student_temperature: divides the student logits before the softmax.
    teacher_temperature: divides the teacher logits before the softmax.

  Returns:
    `[...]` float32 distances in [0, 1].
  """
  log_q, log_p = _log_probs(student_logits, teacher_logits,
                            student_temperature, teacher_temperature)
  return 0.5 * jnp.sum(jnp.abs(jnp.exp(log_p) - jnp.exp(log_q)), axis=-1)


DIVERGENCES: dict[str, Callable[..., Array]] = {
    "forward_kl": forward_kl,
    "reverse_kl": reverse_kl,
    "jsd": generalized_jsd,
    "skew_forward_kl": skew_forward_kl,
    "skew_reverse_kl": skew_reverse_kl,
    "tvd": total_variation,
}

# Keyword arguments each divergence accepts beyond the two temperatures.
DIVERGENCE_PARAMETERS: dict[str, tuple[str, ...]] = {
    "forward_kl": (),
    "reverse_kl": (),
    "jsd": ("beta", "normalized"),
    "skew_forward_kl": ("skew",),
    "skew_reverse_kl": ("skew",),
    "tvd": (),
}


def divergence(name: str, student_logits: Array, teacher_logits: Array,
               **kwargs) -> Array:
  """Dispatches to `DIVERGENCES[name]`.

  Args:
    name: one of `DIVERGENCES`.
    student_logits: `[..., V]` student (Q) logits.
    teacher_logits: `[..., V]` teacher (P) logits.
    **kwargs: the divergence's own keyword arguments (beta, normalized,
      skew) and the temperatures.

  Returns:
    `[...]` float32 divergences.
  """
  validation.check_choice("divergence", name, DIVERGENCES)
  allowed = DIVERGENCE_PARAMETERS[name] + (
      "student_temperature", "teacher_temperature")
  unknown = sorted(set(kwargs) - set(allowed))
  if unknown:
    raise ValueError(
        f"divergence={name!r} does not take {unknown}; it takes {allowed}.")
  if name == "jsd" and "beta" not in kwargs:
    raise ValueError("divergence='jsd' needs beta (a number in [0, 1]).")
  return DIVERGENCES[name](student_logits, teacher_logits, **kwargs)


def _closed_form_gradient(name: str, kwargs: dict) -> bool:
  """Whether `divergence_and_gradient` has a closed form for these settings:
  forward KL, and JSD with a Python-number beta (beta = 0 is forward KL)."""
  if name == "forward_kl":
    return True
  beta = kwargs.get("beta")
  return (name == "jsd" and validation.is_static_number(beta)
          and beta < 1.0)


def divergence_and_gradient(name: str, student_logits: Array,
                            teacher_logits: Array,
                            **kwargs) -> tuple[Array, Array]:
  """`divergence(name, ...)` and its gradient with respect to the student.

  Returns `(values [...], grad [..., V])` with grad[..., v] = d values[...] /
  d student_logits[..., v] (each position's value depends on its own logits
  only). With z = student_logits / T_s and q = softmax(z), the chain rule
  through the softmax gives d D / d z_v = q_v (G_v - sum_u q_u G_u) for
  G_v = d D / d q_v taken with q free; in closed form

      forward KL   G_v = -p_v / q_v           grad = (q - p) / T_s
      JSD(beta)    G_v = (1 - beta) (log q_v - log m_v)

  (the terms in d m / d q cancel: beta p_v / m_v + (1 - beta) q_v / m_v = 1).
  These take a few elementwise operations on what the value already
  computes, instead of autodiff's replay of every log-space step (JSD's
  loss and gradient on `[8, 64, 8192]` logits: 27 against 35 ms on two CPU
  cores, benchmarks/README.md); a token without student mass gets a zero
  gradient, as with autodiff. Other divergences, and JSD with beta = 1 or a
  traced beta, take `jax.vjp` of `divergence`.

  Args:
    name: one of `DIVERGENCES`.
    student_logits: `[..., V]` student (Q) logits.
    teacher_logits: `[..., V]` teacher (P) logits (no gradient is returned).
    **kwargs: as `divergence`.

  Returns:
    `(values [...], grad [..., V])`, float32.
  """
  if not _closed_form_gradient(name, kwargs):
    values, vjp = jax.vjp(
        lambda s: divergence(name, s, teacher_logits, **kwargs),
        student_logits)
    (grad,) = vjp(jnp.ones_like(values))
    return values, grad.astype(jnp.float32)
  values = divergence(name, student_logits, teacher_logits, **kwargs)
  temperature = kwargs.get("student_temperature", 1.0)
  log_q, log_p = _log_probs(student_logits, teacher_logits, temperature,
                            kwargs.get("teacher_temperature", 1.0))
  beta = kwargs.get("beta", 0.0)
  if beta == 0.0:  # forward KL, JSD's beta = 0 limit
    return values, (jnp.exp(log_q) - jnp.exp(log_p)) / temperature
  # The same expressions as `generalized_jsd`, so XLA shares them.
  log_m = _log_mixture(log_p, log_q, beta)
  q = jnp.exp(log_q)
  term = jnp.where(log_q == -jnp.inf, 0.0, log_q - log_m)  # G / (1 - beta)
  kl_qm = jnp.sum(q * term, axis=-1, keepdims=True)  # sum_u q_u term_u
  scale = (1.0 - beta) / temperature
  if kwargs.get("normalized", False):
    scale = scale / _jsd_normalizer(beta)
  return values, scale * q * (term - kl_qm)


def sampled_kl(student_logp_a: Array, teacher_logp_a: Array, *,
               estimator: str = "k1") -> Array:
  """Per-token estimates of KL(Q || P) from sampled tokens a ~ Q.

  With log r = log p(a) - log q(a):

      k1 = -log r                 (unbiased, high variance, can be < 0)
      k2 = 0.5 * (log r)^2        (biased, low variance, >= 0)
      k3 = (r - 1) - log r        (unbiased, >= 0)

  Needs only the log-probabilities of the taken tokens, so no `[..., V]`
  array. See J. Schulman, "Approximating KL divergence"
  (http://joschu.net/blog/kl-approx.html).

  Args:
    student_logp_a: `[...]` log q(a) of the sampled tokens.
    teacher_logp_a: `[...]` log p(a) of the same tokens.
    estimator: "k1", "k2" or "k3".

  Returns:
    `[...]` float32 estimates.
  """
  chex.assert_equal_shape([student_logp_a, teacher_logp_a])
  validation.check_choice("estimator", estimator, ("k1", "k2", "k3"))
  log_r = (teacher_logp_a.astype(jnp.float32)
           - student_logp_a.astype(jnp.float32))
  if estimator == "k1":
    return -log_r
  if estimator == "k2":
    return 0.5 * jnp.square(log_r)
  # Clamp the exponent so a masked student log-probability (-1e9) cannot
  # overflow to inf; the clamp is far beyond any realistic ratio.
  return jnp.expm1(jnp.minimum(log_r, 80.0)) - log_r
