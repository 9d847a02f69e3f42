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

from gkdrl.losses import _checks
from gkdrl.losses import divergences
from gkdrl.losses import objectives
from gkdrl.losses import reductions

Array = jax.Array


def _chunked_values(fn, student_hidden, student_unembedding, teacher_hidden,
                    teacher_unembedding, chunk_size):
  """Per-position outputs of `fn(student_logits, teacher_logits)`, by chunks.

  `fn` returns a tuple of `[B, C]` arrays for a chunk; the result is the
  tuple of the matching `[B, T]` arrays. Each chunk's logits are built once
  and rebuilt in the backward pass (`jax.checkpoint`), never kept.
  """
  batch, length = student_hidden.shape[:2]
  num_chunks = -(-length // chunk_size)
  pad = num_chunks * chunk_size - length

  def split(hidden):  # [B, T, D] -> [N, B, C, D], time-major for the scan
    hidden = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
    hidden = hidden.reshape(batch, num_chunks, chunk_size, hidden.shape[-1])
    return jnp.swapaxes(hidden, 0, 1)

  @jax.checkpoint
  def chunk_values(s_hidden, t_hidden, s_unembed, t_unembed):
    s_logits = jnp.einsum("bcd,dv->bcv", s_hidden, s_unembed,
                          preferred_element_type=jnp.float32)  # [B, C, V]
    t_logits = jnp.einsum("bcd,dv->bcv", t_hidden, t_unembed,
                          preferred_element_type=jnp.float32)  # [B, C, V]
    return fn(s_logits, t_logits)  # tuple of [B, C]

  def body(carry, chunk):
    s_hidden, t_hidden = chunk
    return carry, chunk_values(s_hidden, t_hidden, student_unembedding,
                               teacher_unembedding)

  _, values = jax.lax.scan(body, None, (split(student_hidden),
                                        split(teacher_hidden)))  # [N, B, C]
  # Back to batch-major once, at the boundary: [N, B, C] -> [B, T].
  return tuple(jnp.swapaxes(v, 0, 1).reshape(batch, -1)[:, :length]
               for v in values)


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
  if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or (
      chunk_size < 1):
    raise ValueError(f"chunk_size={chunk_size!r} must be an int >= 1.")
  _checks.check_choice("divergence", divergence, divergences.DIVERGENCES)
  if divergence == "jsd":
    divergence_kwargs.setdefault("beta",
                                 objectives.DEFAULT_DISTILLATION_BETA)
  teacher_hidden = jax.lax.stop_gradient(teacher_hidden)
  teacher_unembedding = jax.lax.stop_gradient(teacher_unembedding)
  chunk_size = min(chunk_size, student_hidden.shape[1])

  temperatures = objectives.temperature_kwargs(divergence_kwargs)

  def div_and_kl(s_logits, t_logits):
    div = divergences.divergence(divergence, s_logits, t_logits,
                                 **divergence_kwargs)
    # The logging metric shares the chunk's logits, without a gradient.
    kl = divergences.reverse_kl(jax.lax.stop_gradient(s_logits), t_logits,
                                **temperatures)
    return div, kl

  values, kl = _chunked_values(div_and_kl, student_hidden,
                               student_unembedding, teacher_hidden,
                               teacher_unembedding, chunk_size)
  loss = reductions.masked_reduce(values, mask, reduction=reduction)
  metrics = {
      "loss/divergence": loss,
      "kl/teacher": reductions.masked_reduce(kl, mask, reduction=reduction),
  }
  return loss, metrics
