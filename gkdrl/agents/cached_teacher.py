"""Supervised KD and SeqKD from an offline teacher cache (no teacher loaded).

The cache (`gkdrl.tasks.teacher_cache`, built by
`gkdrl.runners.cache_teacher`) holds, per train example, the teacher's top-k
token ids and log-probabilities at each target position, or one completion
the teacher sampled. Here:

  * `teacher_top_k(teacher, k, ...)`: the same top-k entries from a live
    teacher (what the cache stores: `gkdrl.losses.top_k_teacher`'s);
  * the supervised_kd loss: `gkdrl.losses.top_k_distillation_loss`, the
    configured divergence between the two bucketed distributions
    `[B, T, K + 1]`, the one implementation the live `teacher_top_k`
    option uses too;
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
from gkdrl import validation
from gkdrl.agents import acting
from gkdrl.agents import base

Array = types.Array


def bucket_log_probs(student_logits: Array, top_ids: Array,
                     top_logp: Array) -> tuple[Array, Array]:
  """Deprecated alias: `gkdrl.losses.bucket_log_probs(student_logits,
  top_ids, top_logp)`, the student's and teacher's log-probabilities on the
  K entries plus a tail bucket (`[B, T, K + 1]`; `[B, T, V]` when K = V)."""
  return losses.bucket_log_probs(student_logits, top_ids, top_logp)


def teacher_top_k(teacher, k: int, *, temperature: float = 1.0,
                  compute_dtype: str = "float32"):
  """`fn(teacher_params, batch) -> (ids, logp)` `[B, T, K]`, jitted.

  The teacher's k most likely tokens at each completion position and their
  log-probabilities under softmax(logits / temperature): the ids and
  log-probabilities of `gkdrl.losses.top_k_teacher`, as the live
  `teacher_top_k` option takes them.
  """

  @jax.jit
  def fn(teacher_params, batch):
    top = losses.top_k_teacher(
        base.teacher_logits(teacher, teacher_params, batch, compute_dtype),
        k, temperature=temperature)  # [B, T, K] each
    return top.ids, top.log_probs

  return fn


def cache_top_k(config, cache) -> int:
  """The k of a top-k cache, which `config.teacher_top_k` (0: unset) must
  equal: a run cannot keep more of the teacher than the cache holds, and
  fewer would silently train on another distribution."""
  k = int(cache.identity["top_k"])
  if config.teacher_top_k and config.teacher_top_k != k:
    validation.fail(
        "teacher_top_k", config.teacher_top_k,
        f"teacher cache {config.teacher_cache} holds the teacher's top-{k}: "
        f"0 (take the cache's k) or {k}")
  return k


def make_cached_kd_loss(config, student) -> base.LossFn:
  """reduce(D(bucketed p_T || bucketed p_S)) from the batch's cached top-k
  (`gkdrl.losses.top_k_distillation_loss`; the teacher's temperature was
  applied when the cache was built, and its tail is 1 - the sum of its
  cached probabilities)."""

  def loss_fn(params, state, batch, teacher_params, key):
    del state, key, teacher_params
    teacher = losses.TopKTeacher(
        ids=batch.teacher_top_ids, log_probs=batch.teacher_top_logp,
        tail_log_prob=None)  # [B, T, K] each; tail from the K log-probs
    return losses.top_k_distillation_loss(
        base.student_logits(student, params, batch, config),  # [B, T, V]
        teacher, batch.completion_mask, divergence=config.divergence,
        reduction=config.reduction, **config.divergence_kwargs())

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

