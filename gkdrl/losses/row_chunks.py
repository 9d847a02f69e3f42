"""Per-position divergences of `[B, T, V]` logits, a chunk of rows at a time.

`distillation_loss` on large logits (V = 151,936 for Qwen) spends most of
its memory on `[B, T, V]` temporaries: the two log-softmaxes, the mixture of
JSD, the exponentials, and, for the backward pass, what autodiff saves of
each. Here the divergence and its gradient with respect to the student's
logits are computed together, one chunk of C positions at a time: the
gradient is exact because each position's value depends on that position's
logits alone, so a vector-Jacobian product with a cotangent of ones (or a
closed form, `divergences.divergence_and_gradient`) gives every row's
gradient at once. The forward pass keeps that gradient (one
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
                        chunk_rows: int, *,
                        with_gradient: Callable[[Array, Array],
                                                tuple[Array, Array, Array]]
                        | None = None) -> tuple[Array, Array]:
  """`fn` applied to every position of `[B, T, V]` logits, by chunks.

  Args:
    fn: `fn(student [C, V], teacher [C, V]) -> (div [C], kl [C])`, each
      output row a function of the same input row only. `div` is
      differentiable with respect to the student's logits; `kl` is a
      metric without a gradient.
    student_logits: `[B, T, V]` student logits.
    teacher_logits: `[B, T, V]` teacher logits (no gradient is returned).
    chunk_rows: positions per chunk, >= 1.
    with_gradient: `(student [C, V], teacher [C, V]) -> (div, kl, d div / d
      student [C, V])`, `fn` with its gradient (a closed form, say); None
      takes `jax.vjp` of `fn`.

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

  if with_gradient is None:
    def with_gradient(s_chunk, t_chunk):
      (div, kl), vjp = jax.vjp(lambda x: fn(x, t_chunk), s_chunk)
      (grad,) = vjp((jnp.ones_like(div), jnp.zeros_like(kl)))
      return div, kl, grad

  def run(s, t, with_grad: bool):
    """(div, kl) [B, T] and, with_grad, d div / d s as [R, V] rows."""
    s_rows, t_rows = flat(s), flat(t)

    def body(i, carry):
      s_chunk, t_chunk = rows_of(s_rows, i), rows_of(t_rows, i)
      if with_grad:
        div, kl, grad = with_gradient(s_chunk, t_chunk)  # grad: [C, V]
        parts = (div, kl, grad.astype(s.dtype))
      else:
        parts = fn(s_chunk, t_chunk)
      return tuple(put(buffer, part, i) for buffer, part in zip(carry, parts))

    zeros = jnp.zeros((rows,), jnp.float32)
    init = (zeros, zeros) + ((jnp.zeros_like(s_rows),) if with_grad else ())
    out = jax.lax.fori_loop(0, num_chunks, body, init)
    return (out[0].reshape(batch, length),
            out[1].reshape(batch, length)), out[2:]

  @jax.custom_vjp
  def values(s, t):
    return run(s, t, with_grad=False)[0]

  def values_fwd(s, t):
    outputs, (grad,) = run(s, t, with_grad=True)
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
