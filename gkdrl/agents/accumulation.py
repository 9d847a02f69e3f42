"""Gradient accumulation: one optimiser step from N micro-batches.

With `grad_accum_steps = N` an update splits its batch of B rows into N
micro-batches of B / N rows and runs the loss and its gradient on one at a
time (a `lax.scan`), so only one micro-batch's activations, logits and
teacher logits are alive at once; the gradients are summed, with weights,
into one float32 buffer of the parameters' shape, and one optimiser step
follows.

The weights make the step the one of the whole batch. Every agent's loss
is a sum of `masked_reduce` terms of one reduction over the completion
mask, and a reduction divides a sum over the rows by a count
(`gkdrl.losses.reduction_denominator`: valid tokens for "token", rows with
a token for "sequence" and "sum"). Micro-batch i's loss divides its part
of the sum by its own count d_i, so

    loss(batch) = sum_i (d_i / D) * loss(micro-batch i),   D = sum_i d_i,

and the same holds for the gradients. What is not a per-row sum, the
baselines of the RL agents (a mean over the batch or over a prompt's
samples), is computed on the whole batch before it is split (`prepare`,
see `gkdrl.agents.rl.prepare`).

Micro-batch i holds rows i, i + N, i + 2N, ...: each row-sharded device
of a data-parallel mesh keeps contributing its own rows to every
micro-batch (when B / N divides by the data axes), so no rows move.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp

from gkdrl import types
from gkdrl import validation
from gkdrl.losses import reductions

# Metrics with these prefixes are reduced like the loss and so combine with
# its weights; every other metric is averaged over the micro-batches.
WEIGHTED_METRICS = ("loss/", "kl/")


def check_divides(num: int, rows: int) -> None:
  """`num` micro-batches must split `rows` rows evenly."""
  if rows % num:
    validation.fail("grad_accum_steps", num,
                    f"it must divide the {rows} rows of each batch "
                    "(batch_size * samples_per_prompt)")


def split(tree, num: int):
  """`[B, ...]` leaves -> `[N, B / N, ...]`; micro-batch i: rows i::N."""

  def one(x):
    x = x.reshape((x.shape[0] // num, num) + x.shape[1:])  # [B / N, N, ...]
    return jnp.swapaxes(x, 0, 1)  # [N, B / N, ...]

  return jax.tree.map(one, tree)


def merge(tree):
  """`[N, B / N, ...]` leaves -> `[B, ...]`, the inverse of `split`."""

  def one(x):
    x = jnp.swapaxes(x, 0, 1)  # [B / N, N, ...]
    return x.reshape((x.shape[0] * x.shape[1],) + x.shape[2:])

  return jax.tree.map(one, tree)


def map_rows(fn: Callable, tree, num: int):
  """`fn` on N micro-batches of `tree`'s rows in turn, results merged.

  One micro-batch's intermediates are alive at a time (`lax.map`).

  Args:
    fn: `fn(micro_tree, i) -> pytree` of `[B / N, ...]` leaves; `i` is the
      micro-batch index (an int32 scalar, e.g. to fold into a key).
    tree: a pytree of `[B, ...]` arrays.
    num: N, which divides B.

  Returns:
    `fn`'s results for all rows, `[B, ...]` leaves, rows in order.
  """
  if num == 1:
    return fn(tree, jnp.zeros((), jnp.int32))
  check_divides(num, jax.tree.leaves(tree)[0].shape[0])
  results = jax.lax.map(lambda args: fn(*args),
                        (split(tree, num), jnp.arange(num, dtype=jnp.int32)))
  return merge(results)


def micro_batch_weights(mask: types.Array, num: int,
                        reduction: str) -> types.Array:
  """`[N]` weights d_i / D of the micro-batches' losses (module docstring).

  Args:
    mask: `[B, T]` completion mask of the whole batch.
    num: N micro-batches.
    reduction: the loss's reduction.

  Returns:
    `[N]` float32 weights; they sum to 1, or are all 0 when no token is
    valid (then every micro-batch's loss is 0 too).
  """
  denominators = jax.vmap(
      lambda m: reductions.reduction_denominator(m, reduction=reduction))(
          split(mask, num))  # [N]
  return denominators / jnp.maximum(jnp.sum(denominators), 1.0)


def value_and_grad(loss_fn, num: int, reduction: str):
  """`jax.value_and_grad(loss_fn, has_aux=True)` by N micro-batches.

  Args:
    loss_fn: `loss_fn(params, state, batch, teacher_params, key) -> (loss,
      metrics)`, a sum of `masked_reduce(..., reduction=reduction)` terms
      over `batch.completion_mask` whose rows are independent (baselines
      computed beforehand).
    num: N, micro-batches per batch; 1 is `jax.value_and_grad` itself.
    reduction: the reduction of `loss_fn`'s terms.

  Returns:
    `fn(params, state, batch, teacher_params, key) -> ((loss, metrics),
    grads)`, equal to the whole batch's up to float rounding. Micro-batch i
    gets `jax.random.split(key, N)[i]`. Metrics named `loss/...` or
    `kl/...` combine like the loss; the others are micro-batch means.
  """
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  if num == 1:
    return grad_fn

  def fn(params, state, batch, teacher_params, key):
    check_divides(num, batch.completion_mask.shape[0])
    weights = micro_batch_weights(batch.completion_mask, num,
                                  reduction)  # [N]

    def body(grads, inputs):
      micro, weight, micro_key = inputs
      (loss, metrics), micro_grads = grad_fn(params, state, micro,
                                             teacher_params, micro_key)
      grads = jax.tree.map(lambda g, m: g + weight * m.astype(jnp.float32),
                           grads, micro_grads)
      return grads, (loss, metrics)

    # Accumulated in float32 whatever the parameters' dtype.
    zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params)
    grads, (losses, metrics) = jax.lax.scan(
        body, zeros, (split(batch, num), weights,
                      jax.random.split(key, num)))
    grads = jax.tree.map(lambda g, p: g.astype(p.dtype), grads, params)
    metrics = {
        name: (jnp.sum(weights * value) if name.startswith(WEIGHTED_METRICS)
               else jnp.mean(value, axis=0))
        for name, value in metrics.items()}
    return (jnp.sum(weights * losses), metrics), grads

  return fn
