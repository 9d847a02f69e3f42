"""Distillation from hidden states, in chunks of positions.

`distillation_loss` takes logits `[B, T, V]`; with a large vocabulary (V =
151,936 for Qwen) those arrays, and their gradients, dominate memory. This
entry point takes the final hidden states and the unembedding matrices of
both models instead, and computes logits, divergence and (in the backward
pass, by rematerialisation) their gradient one chunk of positions at a time,
so no `[B, T, V]` array is ever alive: peak memory grows with the chunk
(`B * chunk_size * V`), not with T * V.

    loss, metrics = chunked_distillation_loss(
        student_hidden, student_unembedding,   # [B, T, D_s], [D_s, V]
        teacher_hidden, teacher_unembedding,   # [B, T, D_t], [D_t, V]
        mask, divergence="jsd", beta=0.9, chunk_size=128)

gives the same values and gradients as `distillation_loss` on the logits
`hidden @ unembedding`.
"""

import chex
import jax
import jax.numpy as jnp

from gkdrl import validation
from gkdrl.losses import divergences
from gkdrl.losses import objectives
from gkdrl.losses import reductions

Array = jax.Array


def _split(x, chunk_size):
  """[B, T, ...] -> [N, B, C, ...], zero-padded to N * C positions."""
  batch, length = x.shape[:2]
  num_chunks = -(-length // chunk_size)
  pad = num_chunks * chunk_size - length
  x = jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2))
  x = x.reshape((batch, num_chunks, chunk_size) + x.shape[2:])
  return jnp.swapaxes(x, 0, 1)


def _merge(x, length):
  """[N, B, C, ...] -> [B, T, ...], the inverse of `_split`."""
  x = jnp.swapaxes(x, 0, 1)
  return x.reshape((x.shape[0], -1) + x.shape[3:])[:, :length]


def _logits(hidden, unembedding):  # [B, C, D] @ [D, V] -> [B, C, V]
  return jnp.einsum("bcd,dv->bcv", hidden, unembedding,
                    preferred_element_type=jnp.float32)


def _vocab_slices(vocab: int, target: int = 16_384) -> int:
  """How many equal slices of the vocabulary the unembedding gradient is
  accumulated in: the fewest that divide V with slices of at most `target`
  (1 when no divisor does)."""
  for n in range(-(-vocab // target), vocab + 1):
    if vocab % n == 0:
      return n if vocab // n >= 1024 or n == 1 else 1
  return 1


def _chunked_values(fn, with_gradient, student_hidden, student_unembedding,
                    teacher_hidden, teacher_unembedding, chunk_size):
  """Per-position `fn(student_logits, teacher_logits)`, by chunks.

  `fn` returns `(div, kl)`, two `[B, C]` arrays for a chunk of C positions;
  the result is the matching `[B, T]` arrays. `with_gradient` returns them
  with d div / d student_logits `[B, C, V]`. Only `div` is differentiable
  (the gradient of `kl` is taken as zero), with respect to the student's
  hidden states and unembedding. The backward pass rebuilds each chunk's
  logits and accumulates the unembedding's gradient in place, one slice of
  the vocabulary at a time, so besides the inputs and the gradients no
  buffer larger than a chunk's `[B, C, V]` logits is ever alive.
  """
  length = student_hidden.shape[1]
  slices = _vocab_slices(student_unembedding.shape[1])

  def forward(s_hidden, s_unembed, t_hidden, t_unembed):
    def body(carry, chunk):
      s_h, t_h = chunk
      return carry, fn(_logits(s_h, s_unembed), _logits(t_h, t_unembed))
    _, values = jax.lax.scan(body, None, (_split(s_hidden, chunk_size),
                                          _split(t_hidden, chunk_size)))
    return tuple(_merge(v, length) for v in values)  # [B, T] each

  @jax.custom_vjp
  def values(s_hidden, s_unembed, t_hidden, t_unembed):
    return forward(s_hidden, s_unembed, t_hidden, t_unembed)

  def values_fwd(s_hidden, s_unembed, t_hidden, t_unembed):
    return (forward(s_hidden, s_unembed, t_hidden, t_unembed),
            (s_hidden, s_unembed, t_hidden, t_unembed))

  def values_bwd(residuals, cotangents):
    s_hidden, s_unembed, t_hidden, t_unembed = residuals
    g_div = cotangents[0]  # [B, T]; kl carries no gradient
    width = s_unembed.shape[1] // slices

    def body(d_unembed, chunk):
      s_h, t_h, g = chunk  # [B, C, D_s], [B, C, D_t], [B, C]
      _, _, grad = with_gradient(_logits(s_h, s_unembed),
                                 _logits(t_h, t_unembed))
      d_logits = grad * g[..., None]  # [B, C, V]
      d_hidden = jnp.einsum("bcv,dv->bcd", d_logits,
                            s_unembed.astype(d_logits.dtype))  # [B, C, D_s]

      def add_slice(i, d_unembed):  # d_unembed[:, slice i] += h^T @ dlogits
        start = i * width
        part = jnp.einsum(
            "bcd,bcv->dv", s_h.astype(d_logits.dtype),
            jax.lax.dynamic_slice_in_dim(d_logits, start, width, axis=2))
        old = jax.lax.dynamic_slice_in_dim(d_unembed, start, width, axis=1)
        return jax.lax.dynamic_update_slice_in_dim(
            d_unembed, old + part, start, axis=1)

      d_unembed = jax.lax.fori_loop(0, slices, add_slice, d_unembed)
      return d_unembed, d_hidden.astype(s_h.dtype)

    # Accumulated in float32 whatever the parameters' dtype.
    d_unembed, d_hidden = jax.lax.scan(
        body, jnp.zeros(s_unembed.shape, jnp.float32),
        (_split(s_hidden, chunk_size), _split(t_hidden, chunk_size),
         _split(g_div, chunk_size)))
    return (_merge(d_hidden, length), d_unembed.astype(s_unembed.dtype),
            jnp.zeros_like(t_hidden),
            jnp.zeros_like(t_unembed))

  values.defvjp(values_fwd, values_bwd)
  return values(student_hidden, student_unembedding, teacher_hidden,
                teacher_unembedding)


def chunked_distillation_loss(student_hidden: Array,
                              student_unembedding: Array,
                              teacher_hidden: Array,
                              teacher_unembedding: Array, mask: Array, *,
                              divergence: str = "jsd",
                              reduction: str = "sequence",
                              chunk_size: int = 128, **divergence_kwargs
                              ) -> tuple[Array, dict[str, Array]]:
  """`distillation_loss` on `hidden @ unembedding`, by chunks of positions.

  Args:
    student_hidden: `[B, T, D_s]` student hidden states at the positions
      that predict the completion tokens.
    student_unembedding: `[D_s, V]` student output matrix.
    teacher_hidden: `[B, T, D_t]` teacher hidden states (no gradient).
    teacher_unembedding: `[D_t, V]` teacher output matrix (no gradient).
    mask: `[B, T]` 0/1 or bool, 1 at valid completion tokens.
    divergence: a name of `DIVERGENCES`.
    reduction: "sequence" (paper Eq. 2), "token" or "sum".
    chunk_size: positions per chunk, >= 1; peak memory ~ B * chunk_size * V.
    **divergence_kwargs: beta / normalized / skew and the temperatures (with
      divergence="jsd" and no beta, beta = 0.5 as in `distillation_loss`).

  Returns:
    (loss, metrics) with "loss/divergence" and "kl/teacher", as
    `distillation_loss`.
  """
  chex.assert_rank([student_hidden, teacher_hidden, mask], [3, 3, 2])
  chex.assert_rank([student_unembedding, teacher_unembedding], 2)
  chex.assert_equal_shape_prefix([student_hidden, teacher_hidden, mask], 2)
  if student_unembedding.shape[1] != teacher_unembedding.shape[1]:
    raise ValueError(
        f"Vocabularies differ: student_unembedding has V="
        f"{student_unembedding.shape[1]}, teacher_unembedding has V="
        f"{teacher_unembedding.shape[1]}.")
  validation.check_int("chunk_size", chunk_size, 1)
  validation.check_choice("divergence", divergence, divergences.DIVERGENCES)
  if divergence == "jsd":
    divergence_kwargs.setdefault("beta",
                                 objectives.DEFAULT_DISTILLATION_BETA)
  teacher_hidden = jax.lax.stop_gradient(teacher_hidden)
  teacher_unembedding = jax.lax.stop_gradient(teacher_unembedding)
  chunk_size = min(chunk_size, student_hidden.shape[1])

  # The logging metric shares each chunk's logits, without a gradient.
  div_and_kl = objectives.divergence_and_teacher_kl(divergence,
                                                    divergence_kwargs)
  with_gradient = objectives.divergence_kl_and_gradient(divergence,
                                                       divergence_kwargs)
  values, kl = _chunked_values(div_and_kl, with_gradient, student_hidden,
                               student_unembedding, teacher_hidden,
                               teacher_unembedding, chunk_size)
  loss = reductions.masked_reduce(values, mask, reduction=reduction)
  metrics = {
      "loss/divergence": loss,
      "kl/teacher": reductions.masked_reduce(kl, mask, reduction=reduction),
  }
  return loss, metrics
