"""Supervised KD and SeqKD from an offline teacher cache (no teacher loaded).

The cache (`gkdrl.tasks.teacher_cache`, built by
`gkdrl.runners.cache_teacher`) holds, per train example, the teacher's top-k
token ids and log-probabilities at each target position, or one completion
the teacher sampled. Here:

  * `teacher_top_k(teacher, k, ...)`: the same top-k entries from a live
    teacher (what the cache stores; also the live reference of the tests);
  * `bucket_log_probs`: the K cached entries plus one tail bucket
    (the remaining mass), for teacher and student alike;
  * the supervised_kd loss: the configured divergence between the two
    bucketed distributions `[B, T, K + 1]`;
  * the acts that attach the cached entries (or samples) to each batch.

The bucketed divergence is exact when k = V (the tail is empty) and, for
the KL family, a lower bound of the full divergence otherwise (merging
outcomes never increases an f-divergence: data processing inequality).
"""

import jax
import jax.numpy as jnp
import numpy as np

from gkdrl import losses
from gkdrl import types
from gkdrl.agents import acting
from gkdrl.agents import base

Array = types.Array
# Log-probability standing for an empty tail bucket (exp() of it is 0).
_EMPTY_LOGP = -1e4


def _log1mexp(log_mass: Array) -> Array:
  """log(1 - exp(log_mass)) for log_mass <= 0, with an empty floor."""
  mass = jnp.clip(jnp.exp(log_mass), 0.0, 1.0)
  return jnp.maximum(jnp.log1p(-mass), _EMPTY_LOGP)


def bucket_log_probs(student_logits: Array, top_ids: Array,
                     top_logp: Array) -> tuple[Array, Array]:
  """The student's and teacher's log-probabilities on K entries + a tail.

  Args:
    student_logits: `[B, T, V]` float logits (any temperature applied).
    top_ids: `[B, T, K]` int32 ids of the teacher's top-k tokens.
    top_logp: `[B, T, K]` the teacher's log-probabilities of those tokens.

  Returns:
    (student, teacher) log-probabilities `[B, T, K + 1]`, the last entry the
    tail bucket (the mass outside the K ids); each row sums to 1.
  """
  log_q = jax.nn.log_softmax(student_logits.astype(jnp.float32))  # [B, T, V]
  q_top = jnp.take_along_axis(log_q, top_ids, axis=-1)  # [B, T, K]
  # Student tail: logsumexp of the entries outside the top-k ids (exact and
  # with useful gradients even when the tail is small).
  outside = jnp.ones(log_q.shape, bool)
  outside = jax.vmap(jax.vmap(lambda o, i: o.at[i].set(False)))(
      outside, top_ids)  # [B, T, V]
  q_tail = jax.nn.logsumexp(jnp.where(outside, log_q, -jnp.inf), axis=-1,
                            keepdims=True)  # [B, T, 1]
  q_tail = jnp.maximum(q_tail, _EMPTY_LOGP)
  p_top = top_logp.astype(jnp.float32)
  p_tail = _log1mexp(jax.nn.logsumexp(p_top, axis=-1, keepdims=True))
  # With every token among the ids (k = V) both tails are exactly empty;
  # the teacher's 1 - sum(p) would be float rounding noise.
  has_tail = jnp.any(outside, axis=-1, keepdims=True)  # [B, T, 1]
  p_tail = jnp.where(has_tail, p_tail, _EMPTY_LOGP)
  return (jnp.concatenate([q_top, q_tail], axis=-1),
          jnp.concatenate([p_top, p_tail], axis=-1))


def teacher_top_k(teacher, k: int, *, temperature: float = 1.0,
                  compute_dtype: str = "float32"):
  """`fn(teacher_params, batch) -> (ids, logp)` `[B, T, K]`, jitted.

  The teacher's k most likely tokens at each completion position and their
  log-probabilities under softmax(logits / temperature).
  """

  @jax.jit
  def fn(teacher_params, batch):
    logits = base.teacher_logits(teacher, teacher_params, batch,
                                 compute_dtype)  # [B, T, V]
    log_p = jax.nn.log_softmax(logits / temperature)
    logp, ids = jax.lax.top_k(log_p, k)  # [B, T, K]
    return ids.astype(jnp.int32), logp

  return fn


def make_cached_kd_loss(config, student) -> base.LossFn:
  """reduce(D(bucketed p_T || bucketed p_S)) from the batch's cached top-k."""
  kwargs = dict(config.divergence_kwargs())
  student_temperature = kwargs.pop("student_temperature")
  kwargs.pop("teacher_temperature")  # applied when the cache was built

  def loss_fn(params, state, batch, teacher_params, key):
    del state, key, teacher_params
    logits = base.student_logits(student, params, batch, config)  # [B, T, V]
    log_q, log_p = bucket_log_probs(
        logits / student_temperature, batch.teacher_top_ids,
        batch.teacher_top_logp)  # [B, T, K + 1] each
    # Normalised log-probabilities are their own logits (log_softmax is the
    # identity on them), so any divergence of gkdrl.losses applies.
    return losses.distillation_loss(
        log_q, log_p, batch.completion_mask, divergence=config.divergence,
        reduction=config.reduction, chunk_size=0, **kwargs)

  return loss_fn


def make_cached_kd_act(cache):
  """Supervised KD's data: the targets with their cached teacher top-k."""

  def act(state, task_batch, key, *, teacher_params=None,
          reward_params=None):
    del state, key, teacher_params, reward_params
    ids, logp = cache.top_k(task_batch)  # [B, T, K] each
    batch = acting.dataset_batch(task_batch)._replace(
        teacher_top_ids=jnp.asarray(ids), teacher_top_logp=jnp.asarray(logp))
    return batch, acting.rollout_info(batch)

  return act


def make_cached_seqkd_act(cache, pad_token_id: int):
  """SeqKD's data: the teacher's cached completions for the prompts."""

  def act(state, task_batch, key, *, teacher_params=None,
          reward_params=None):
    del state, key, teacher_params, reward_params
    tokens, mask = cache.samples(task_batch, pad_token_id)  # [B, T] each
    batch = types.Batch(
        prompt_tokens=jnp.asarray(task_batch.prompt_tokens, jnp.int32),
        prompt_mask=jnp.asarray(task_batch.prompt_mask, bool),
        completion_tokens=jnp.asarray(tokens),
        completion_mask=jnp.asarray(mask))
    return batch, acting.rollout_info(batch)

  return act


def top_k_rows(fn, teacher_params, task_batch) -> list[dict]:
  """Per-example cache rows {"tokens", "ids", "logp"} of one task batch."""
  batch = acting.dataset_batch(task_batch)
  ids, logp = jax.device_get(fn(teacher_params, batch))
  rows = []
  for row in range(len(task_batch.sources)):
    n = int(task_batch.target_mask[row].sum())
    rows.append({"tokens": np.asarray(task_batch.target_tokens[row, :n],
                                      np.int32),
                 "ids": ids[row, :n], "logp": logp[row, :n].astype(np.float32)})
  return rows


def sample_rows(teacher, teacher_params, task_batch, key, *, config,
                eos_token_id, pad_token_id) -> list[dict]:
  """Per-example cache rows {"tokens"}: one teacher sample each, EOS kept."""
  batch = acting.sample_batch(teacher, teacher_params, key, task_batch,
                              config=config, eos_token_id=eos_token_id,
                              pad_token_id=pad_token_id)
  tokens, mask = jax.device_get((batch.completion_tokens,
                                 batch.completion_mask))
  return [{"tokens": np.asarray(tokens[row][mask[row]], np.int32)}
          for row in range(tokens.shape[0])]

