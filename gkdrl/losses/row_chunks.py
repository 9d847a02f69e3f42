"""Per-position divergences of `[B, T, V]` logits, a chunk of rows at a time.

`distillation_loss` on large logits (V = 151,936 for Qwen) spends most of
its memory on `[B, T, V]` temporaries: the two log-softmaxes, the mixture of
JSD, the exponentials, and, for the backward pass, what autodiff saves of
each. Here the divergence and its gradient with respect to the student's
logits are computed together, one chunk of C positions at a time: the
gradient is exact because each position's value depends on that position's
logits alone, so a vector-Jacobian product with a cotangent of ones gives
every row's gradient at once. The forward pass keeps that gradient (one
`[B, T, V]` array) for the backward pass, which only scales it by the
incoming per-position cotangents. Besides the inputs and that array, no
buffer larger than a chunk's `[C, V]` is alive.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp

Array = jax.Array

# Logits per chunk when the caller does not choose: 1M floats (4 MB), so a
# chunk's temporaries stay near 40 MB at any vocabulary size. Larger chunks
# were no faster on CPU (benchmarks/loss_memory.py, 4M: 0.44 s against 0.30
# s at V = 49,152, B = 2, T = 512) and need more memory.
_CHUNK_ELEMENTS = 1 << 20


def default_chunk_rows(vocab_size: int) -> int:
  """Positions per chunk: about `_CHUNK_ELEMENTS` logits, at least 1."""
  return max(1, _CHUNK_ELEMENTS // vocab_size)


def per_position_values(fn: Callable[[Array, Array], tuple[Array, Array]],
                        student_logits: Array, teacher_logits: Array,
                        chunk_rows: int) -> tuple[Array, Array]:
  """`fn` applied to every position of `[B, T, V]` logits, by chunks.

  Args:
    fn: `fn(student [C, V], teacher [C, V]) -> (div [C], kl [C])`, each
      output row a function of the same input row only. `div` is
      differentiable with respect to the student's logits; `kl` is a
      metric without a gradient.
    student_logits: `[B, T, V]` student logits.
    teacher_logits: `[B, T, V]` teacher logits (no gradient is returned).
    chunk_rows: positions per chunk, >= 1.

  Returns:
    `(div [B, T], kl [B, T])`, float32.
  """
  batch, length, vocab = student_logits.shape
  rows = batch * length
  chunk = min(chunk_rows, rows)
  num_chunks = -(-rows // chunk)

  def flat(x):  # [B, T, V] -> [R, V], free in row-major layout
    return x.reshape(rows, vocab)

  def start(i):
    # The last chunk ends at row R, overlapping the one before it when C
    # does not divide R: its rows are recomputed to the same values.
    return jnp.minimum(i * chunk, rows - chunk)

  def rows_of(x, i):
    return jax.lax.dynamic_slice_in_dim(x, start(i), chunk, axis=0)

  def put(buffer, part, i):
    return jax.lax.dynamic_update_slice_in_dim(buffer, part, start(i), axis=0)

  def values_only(s, t):
    s, t = flat(s), flat(t)

    def body(i, carry):
      div, kl = fn(rows_of(s, i), rows_of(t, i))
      return put(carry[0], div, i), put(carry[1], kl, i)

    zeros = jnp.zeros((rows,), jnp.float32)
    div, kl = jax.lax.fori_loop(0, num_chunks, body, (zeros, zeros))
    return div.reshape(batch, length), kl.reshape(batch, length)

  @jax.custom_vjp
  def values(s, t):
    return values_only(s, t)

  def values_fwd(s, t):
    s_rows, t_rows = flat(s), flat(t)

    def body(i, carry):
      div_all, kl_all, grad_all = carry
      t_chunk = rows_of(t_rows, i)
      (div, kl), vjp = jax.vjp(lambda x: fn(x, t_chunk), rows_of(s_rows, i))
      (grad,) = vjp((jnp.ones_like(div), jnp.zeros_like(kl)))  # [C, V]
      return (put(div_all, div, i), put(kl_all, kl, i),
              put(grad_all, grad.astype(s.dtype), i))

    zeros = jnp.zeros((rows,), jnp.float32)
    div, kl, grad = jax.lax.fori_loop(
        0, num_chunks, body, (zeros, zeros, jnp.zeros_like(s_rows)))
    outputs = (div.reshape(batch, length), kl.reshape(batch, length))
    # Only shapes of the teacher are needed for its (zero) cotangent.
    return outputs, (grad, jnp.zeros((), t.dtype))

  def values_bwd(residuals, cotangents):
    grad, t_zero = residuals
    g_div = cotangents[0].reshape(rows, 1).astype(grad.dtype)  # kl: none
    d_student = (grad * g_div).reshape(batch, length, vocab)
    d_teacher = jnp.broadcast_to(t_zero, (batch, length, vocab))
    return d_student, d_teacher

  values.defvjp(values_fwd, values_bwd)
  return values(student_logits, teacher_logits)
