"""Acting: how an agent turns a task batch into a training batch.

Runs on the host around jitted pieces: the sampler (one compiled rollout per
shape), decoding to text, and host reward models. Nothing here is
differentiated.
"""

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gkdrl import sampling
from gkdrl import types
from gkdrl.agents import base
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


def repeat_rows(task_batch, samples_per_prompt: int):
  """Repeats each prompt `samples_per_prompt` times as consecutive rows."""
  k = samples_per_prompt
  if k == 1:
    return task_batch
  rep = lambda a: np.repeat(np.asarray(a), k, axis=0)
  rep_list = lambda xs: [x for x in xs for _ in range(k)]
  return task_batch._replace(
      prompt_tokens=rep(task_batch.prompt_tokens),
      prompt_mask=rep(task_batch.prompt_mask),
      target_tokens=rep(task_batch.target_tokens),
      target_mask=rep(task_batch.target_mask),
      sources=rep_list(task_batch.sources),
      targets=rep_list(task_batch.targets))


def sample_batch(model, params, key: types.PRNGKey, task_batch, *,
                 config: base.AgentConfig, eos_token_id: int,
                 pad_token_id: int) -> types.Batch:
  """Completions sampled by `model` (student or teacher) for the prompts."""
  samples = sampling.sample(
      model, params, key, jnp.asarray(task_batch.prompt_tokens, jnp.int32),
      jnp.asarray(task_batch.prompt_mask, bool),
      max_new_tokens=config.max_new_tokens,
      temperature=config.sample_temperature, top_k=config.top_k,
      top_p=config.top_p, eos_token_id=eos_token_id,
      pad_token_id=pad_token_id)
  return types.Batch(
      prompt_tokens=jnp.asarray(task_batch.prompt_tokens, jnp.int32),
      prompt_mask=jnp.asarray(task_batch.prompt_mask, bool),
      completion_tokens=samples.tokens,
      completion_mask=samples.mask,
      behaviour_logp_a=samples.logp_a)


def decode_completions(tokenizer, tokens, mask) -> list[str]:
  """Decodes each row's valid tokens, special tokens (EOS) dropped."""
  tokens, mask = np.asarray(tokens), np.asarray(mask, bool)
  return [tokenizer.decode(row[valid].tolist(), skip_special_tokens=True)
          for row, valid in zip(tokens, mask)]


def score_batch(reward_model: rm_base.RewardModel, reward_params: Any,
                tokenizer, batch: types.Batch, sources: Sequence[str],
                targets: Sequence[str]) -> np.ndarray:
  """Rewards `[B]` float32 of a batch's completions (on the host)."""
  completions = decode_completions(tokenizer, batch.completion_tokens,
                                   batch.completion_mask)
  inputs = rm_base.RewardInputs(
      sources=list(sources), completions=completions, targets=list(targets),
      prompt_tokens=batch.prompt_tokens, prompt_mask=batch.prompt_mask,
      completion_tokens=batch.completion_tokens,
      completion_mask=batch.completion_mask)
  if not reward_model.on_host:
    inputs = inputs.arrays_only()
  rewards = reward_model.score(reward_params, inputs)
  return rm_base.check_rewards(np.asarray(rewards), len(completions),
                               reward_model.name)


def rollout_info(batch: types.Batch) -> dict[str, float]:
  """Host metrics of a rollout."""
  lengths = np.asarray(batch.completion_mask).sum(axis=1)
  return {"rollout/length": float(lengths.mean())}
