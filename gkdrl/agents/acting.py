"""Acting: how an agent turns a task batch into a training batch.

Runs on the host around jitted pieces: the sampler (one compiled rollout per
shape, each compile logged and counted as "sampler", see
`base.compile_counts`), the teacher's forward pass dispatched ahead of the
update ("teacher"), decoding to text, and host reward models. Nothing here
is differentiated.
"""

from collections.abc import Sequence
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gkdrl import parallel
from gkdrl import sampling
from gkdrl import types
from gkdrl.agents import accumulation
from gkdrl.agents import base
from gkdrl.envs import text_generation
from gkdrl.reward_models import base as rm_base


def draw_student_data(key: types.PRNGKey, lmbda: float) -> bool:
  """Algorithm 1's coin: True (student samples) with probability lmbda.

  Drawn from the PRNG key, not from host randomness, so every host of a
  multi-host run draws the same value for the same key.
  """
  if lmbda >= 1.0:
    return True
  if lmbda <= 0.0:
    return False
  return bool(jax.random.uniform(key) < lmbda)


def dataset_batch(task_batch) -> types.Batch:
  """The task batch's reference targets as completions."""
  return types.Batch(
      prompt_tokens=jnp.asarray(task_batch.prompt_tokens, jnp.int32),
      prompt_mask=jnp.asarray(task_batch.prompt_mask, bool),
      completion_tokens=jnp.asarray(task_batch.target_tokens, jnp.int32),
      completion_mask=jnp.asarray(task_batch.target_mask, bool))


def _repeat(x, k: int):
  """`x [B, ...]` with each row repeated k times: `[B * k, ...]`."""
  if not isinstance(x, jax.Array):
    return np.repeat(np.asarray(x), k, axis=0)
  # A global array of a multi-host run cannot become NumPy; kept split by
  # rows as it was, each process holds the repeats of its own rows.
  repeated = jnp.repeat(x, k, axis=0)
  if isinstance(x.sharding, jax.sharding.NamedSharding):
    repeated = jax.device_put(repeated, x.sharding)
  return repeated


def repeat_rows(task_batch, samples_per_prompt: int):
  """Repeats each prompt `samples_per_prompt` times as consecutive rows.

  NumPy arrays stay NumPy; `jax.Array`s (global arrays of a multi-host run
  included) stay on their devices, split by rows as before, so each
  process's rows are the repeats of its own rows and match its repeated
  `sources` and `targets` (process-local lists).
  """
  k = samples_per_prompt
  if k == 1:
    return task_batch
  rep = lambda a: _repeat(a, k)
  rep_list = lambda xs: [x for x in xs for _ in range(k)]
  return task_batch._replace(
      prompt_tokens=rep(task_batch.prompt_tokens),
      prompt_mask=rep(task_batch.prompt_mask),
      target_tokens=rep(task_batch.target_tokens),
      target_mask=rep(task_batch.target_mask),
      sources=rep_list(task_batch.sources),
      targets=rep_list(task_batch.targets))


def _sample_rows(model, params, key, prompt_tokens, prompt_mask, settings):
  """Samples, by `micro_batches` micro-batches of rows (one at a time)."""
  settings = dict(settings)
  params = base.cast_params(params, settings.pop("compute_dtype"))
  num = settings.pop("micro_batches")

  def sample(prompts, i):
    # One micro-batch samples alone with its own key; a single batch keeps
    # the key as it is.
    micro_key = key if num == 1 else jax.random.fold_in(key, i)
    return sampling.sample(model, params, micro_key, *prompts, **settings)

  return accumulation.map_rows(sample, (prompt_tokens, prompt_mask), num)


@functools.partial(jax.jit, static_argnames=("model", "settings"))
def _sample(model, params, key, prompt_tokens, prompt_mask, *, settings):
  # An outer jit around the sampler's own, so that its compiles are counted
  # here; the inner jit is inlined, never compiled on its own.
  base.log_compile("sampler", prompt_tokens=prompt_tokens)
  return _sample_rows(model, params, key, prompt_tokens, prompt_mask,
                      settings)


@functools.partial(jax.jit, static_argnames=("model", "settings"))
def _sample_stacked(model, params, key, prompt_tokens, prompt_mask, *,
                    settings):
  base.log_compile("sampler_stacked", prompt_tokens=prompt_tokens)
  sample = lambda p: _sample_rows(model, p, key, prompt_tokens, prompt_mask,
                                  settings)
  return jax.vmap(sample)(params)


def sample_batch(model, params, key: types.PRNGKey, task_batch, *,
                 config: base.AgentConfig, eos_token_id: int,
                 pad_token_id: int, stacked: bool = False) -> types.Batch:
  """Completions sampled by `model` (student or teacher) for the prompts.

  Args:
    model: the sampling `LanguageModel` (a static argument: pass the same
      object each call).
    params: its parameters; with `stacked`, a leading axis [A] of A models.
    key: PRNG key (with `stacked`, every model samples with this same key).
    task_batch: the `TaskBatch` of prompts `[B, P]`.
    config: the agent config (T, the sampling settings, and
      `grad_accum_steps`: the rows are sampled that many micro-batches at
      a time, micro-batch i = rows i::N with the key folded with i).
    eos_token_id: id, or ids, that end a completion.
    pad_token_id: id written after the end.
    stacked: sample from each of the A stacked models in one compiled call.

  Returns:
    The `Batch` of prompts and samples; with `stacked` every field has the
    leading axis [A] (prompts repeated).
  """
  settings = (("max_new_tokens", config.max_new_tokens),
              ("temperature", config.sample_temperature),
              ("top_k", config.top_k), ("top_p", config.top_p),
              ("eos_token_id", eos_token_id if isinstance(eos_token_id, int)
               else tuple(eos_token_id)),  # static: hashable
              ("pad_token_id", pad_token_id),
              # Rollouts run in the compute dtype, like the forward passes
              # of the update (the cast happens inside the compiled call).
              ("compute_dtype", config.compute_dtype),
              ("micro_batches", config.grad_accum_steps))
  prompt_tokens = jnp.asarray(task_batch.prompt_tokens, jnp.int32)  # [B, P]
  prompt_mask = jnp.asarray(task_batch.prompt_mask, bool)  # [B, P]
  accumulation.check_divides(config.grad_accum_steps, prompt_tokens.shape[0])
  samples = (_sample_stacked if stacked else _sample)(
      model, params, key, prompt_tokens, prompt_mask, settings=settings)
  if stacked:
    num = samples.tokens.shape[0]
    prompt_tokens, prompt_mask = (
        jnp.broadcast_to(x, (num,) + x.shape)
        for x in (prompt_tokens, prompt_mask))  # [A, B, P]
  return types.Batch(
      prompt_tokens=prompt_tokens,
      prompt_mask=prompt_mask,
      completion_tokens=samples.tokens,
      completion_mask=samples.mask,
      behaviour_logp_a=samples.logp_a)


@functools.partial(jax.jit,
                   static_argnames=("model", "compute_dtype", "micro_batches"))
def _teacher_hidden(model, params, batch, *, compute_dtype, micro_batches):
  base.log_compile("teacher", batch=batch)
  params = base.cast_params(params, compute_dtype)
  return accumulation.map_rows(
      lambda rows, _: base.completion_hidden(model, params, rows), batch,
      micro_batches)  # [B, T, D]


def with_teacher_hidden(teacher, teacher_params, batch: types.Batch, *,
                        compute_dtype: str,
                        micro_batches: int = 1) -> types.Batch:
  """The batch with the teacher's hidden states `[B, T, D]`, dispatched now.

  JAX returns before the device finishes, so host work that follows (host
  rewards) overlaps the teacher's forward pass (not where CPU computations
  run on the calling thread, as `runners.cpu_memory.keep_scratch_memory`
  has them: there the pass ends first); the update then only
  unembeds them (`base.teacher_logits`), one micro-batch at a time. The
  forward pass itself runs `micro_batches` micro-batches of rows at a time,
  so its activations are those of B / N rows; its result is `[B, T, D]`
  for the whole batch (D, not V: no teacher logits are kept).
  """
  return batch._replace(teacher_hidden=_teacher_hidden(
      teacher, teacher_params, batch._replace(rewards=None),
      compute_dtype=compute_dtype, micro_batches=micro_batches))


def decode_completions(tokenizer, tokens, mask) -> list[str]:
  """Decodes each row's valid tokens, special tokens (EOS) dropped.

  Only this process's rows (`parallel.host_local`): every row in a single
  process, the rows of its own prompts in a multi-host run.

  Args:
    tokenizer: has `decode(ids, skip_special_tokens=True)`.
    tokens: `[B, T]` completion tokens.
    mask: `[B, T]`, True at valid tokens.

  Returns:
    `B_local` strings.
  """
  tokens = parallel.host_local(tokens)  # [B_local, T]
  mask = parallel.host_local(mask).astype(bool)  # [B_local, T]
  return [tokenizer.decode(row[valid].tolist(), skip_special_tokens=True)
          for row, valid in zip(tokens, mask)]


@functools.partial(jax.jit, static_argnames=("reward_model",))
def _score_on_device(reward_model, reward_params, inputs):
  base.log_compile("reward", completion_tokens=inputs.completion_tokens)
  return text_generation.score_rewards(reward_model.score, reward_params,
                                       inputs)


def score_batch(reward_model: rm_base.RewardModel, reward_params: Any,
                tokenizer, batch: types.Batch, sources: Sequence[str],
                targets: Sequence[str]) -> jax.Array:
  """Rewards `[B]` float32 of a batch's completions.

  Host models get the decoded completions of this process's rows
  (`parallel.host_local`; every row in a single process), beside those
  rows' token arrays and texts; their rewards go back as rows of one global
  array (`parallel.from_host_local`). Device models read only the token
  arrays, so their batches are not decoded, and they run as one compiled
  call (counted as "reward" by `base.compile_counts`). Each process checks
  the rewards of its rows (shape, finite values).

  Args:
    reward_model: the `RewardModel`.
    reward_params: its parameters.
    tokenizer: decodes completions for host models.
    batch: the `Batch` of prompts `[B, P]` and completions `[B, T]`.
    sources: this process's `B_local` source texts.
    targets: this process's `B_local` reference texts.

  Returns:
    `[B]` float32, split by rows like `batch.completion_tokens`.
  """
  inputs = rm_base.RewardInputs(
      prompt_tokens=batch.prompt_tokens, prompt_mask=batch.prompt_mask,
      completion_tokens=batch.completion_tokens,
      completion_mask=batch.completion_mask)
  if reward_model.on_host:
    local = jax.tree.map(parallel.host_local, inputs)  # [B_local, ...]
    local = local._replace(
        sources=list(sources), targets=list(targets),
        completions=decode_completions(tokenizer, batch.completion_tokens,
                                       batch.completion_mask))
    rewards = reward_model.score(reward_params, local)
  else:
    rewards = parallel.host_local(
        _score_on_device(reward_model, reward_params, inputs))
  num_local = parallel.host_local(batch.completion_mask).shape[0]
  rewards = rm_base.check_rewards(rewards, num_local, reward_model.name)
  return parallel.from_host_local(rewards, batch.completion_tokens)


def rollout_info(batch: types.Batch) -> dict[str, types.Array]:
  """Metrics of a rollout, as device scalars.

  Left on the device (not `float`) so that building a batch never waits for
  the sampler; the loop reads them only on the steps it logs.
  """
  lengths = jnp.sum(batch.completion_mask, axis=1, dtype=jnp.float32)  # [B]
  return {"rollout/length": jnp.mean(lengths)}
