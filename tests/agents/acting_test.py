"""Acting helpers: reward scoring decodes text only for host models."""

import jax
import jax.numpy as jnp
import numpy as np

from gkdrl import reward_models
from gkdrl import types
from gkdrl.agents import acting
from gkdrl.agents import base
from gkdrl.tasks import base as tasks_base

ARRAY_FIELDS = ("prompt_tokens", "prompt_mask", "target_tokens",
                "target_mask")


class NoDecode:
  """A tokenizer that must not be used."""

  def decode(self, *args, **kwargs):
    raise AssertionError("decoded for a device reward model")


def _batch():
  mask = np.array([[1, 1, 1, 0], [1, 0, 0, 0]], bool)  # lengths 3 and 1
  return types.Batch(
      prompt_tokens=np.ones((2, 3), np.int32),
      prompt_mask=np.ones((2, 3), bool),
      completion_tokens=np.where(mask, 5, 0).astype(np.int32),
      completion_mask=mask)


def test_device_reward_models_score_without_decoding():
  reward = reward_models.make_length_penalty(scale=0.5)
  assert not reward.on_host
  before = base.compile_counts().get("reward", 0)
  for _ in range(2):
    rewards = acting.score_batch(reward, (), NoDecode(), _batch(),
                                 ["s"] * 2, ["t"] * 2)
    np.testing.assert_allclose(rewards, [-1.5, -0.5])
    assert isinstance(rewards, jax.Array) and rewards.dtype == np.float32
  # One compiled call, compiled once for the shape.
  assert base.compile_counts()["reward"] - before == 1


def test_host_reward_models_get_the_decoded_text():
  seen = {}

  def fn(sources, completions, targets):
    seen.update(sources=sources, completions=completions, targets=targets)
    return np.array([len(c) for c in completions], np.float32)

  class Tokenizer:

    def decode(self, ids, skip_special_tokens):
      assert skip_special_tokens
      return "x" * len(ids)

  rewards = acting.score_batch(reward_models.make_python_reward(fn),
                               (), Tokenizer(), _batch(), ["a", "b"],
                               ["c", "d"])
  np.testing.assert_array_equal(rewards, [3.0, 1.0])
  assert seen == {"sources": ["a", "b"], "completions": ["xxx", "x"],
                  "targets": ["c", "d"]}


def test_repeat_rows_keeps_jax_arrays_on_device_with_the_same_rows():
  task_batch = tasks_base.TaskBatch(
      prompt_tokens=np.arange(6, dtype=np.int32).reshape(2, 3),
      prompt_mask=np.array([[0, 1, 1], [1, 1, 1]], bool),
      target_tokens=np.array([[7, 8], [9, 0]], np.int32),
      target_mask=np.array([[1, 1], [1, 0]], bool),
      sources=["a", "b"], targets=["c", "d"])
  on_host = acting.repeat_rows(task_batch, 3)
  on_device = acting.repeat_rows(
      task_batch._replace(**{f: jnp.asarray(getattr(task_batch, f))
                             for f in ARRAY_FIELDS}), 3)
  for field in ARRAY_FIELDS:
    expected = np.repeat(getattr(task_batch, field), 3, axis=0)
    assert isinstance(getattr(on_host, field), np.ndarray)
    assert isinstance(getattr(on_device, field), jax.Array)
    np.testing.assert_array_equal(getattr(on_host, field), expected)
    np.testing.assert_array_equal(getattr(on_device, field), expected)
  assert on_device.sources == ["a"] * 3 + ["b"] * 3
  assert on_device.targets == ["c"] * 3 + ["d"] * 3


def test_rollouts_run_in_the_compute_dtype(tiny_models, fixed_batch,
                                           facts_task):
  student, params, _, _ = tiny_models
  tok = facts_task.tokenizer
  kwargs = dict(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
  key = jax.random.key(3)

  def rollout(compute_dtype, p):
    config = base.AgentConfig(max_new_tokens=6, sample_temperature=1.0,
                              compute_dtype=compute_dtype)
    return acting.sample_batch(student, p, key, fixed_batch, config=config,
                               **kwargs)

  in_bf16 = rollout("bfloat16", params)
  cast_first = rollout("float32", base.cast_params(params, "bfloat16"))
  in_f32 = rollout("float32", params)
  np.testing.assert_array_equal(in_bf16.completion_tokens,
                                cast_first.completion_tokens)
  # XLA may keep excess precision inside one compiled call, so the values
  # agree to bfloat16 precision, not bit for bit.
  np.testing.assert_allclose(in_bf16.behaviour_logp_a,
                             cast_first.behaviour_logp_a, rtol=2e-2,
                             atol=2e-2)
  # bfloat16 compute really changed the numbers (not a silent float32 run).
  assert not np.array_equal(in_bf16.behaviour_logp_a,
                            in_f32.behaviour_logp_a)
