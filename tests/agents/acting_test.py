"""Acting helpers: reward scoring decodes text only for host models."""

import numpy as np

from gkdrl import reward_models
from gkdrl import types
from gkdrl.agents import acting
from gkdrl.agents import base


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
    assert rewards.dtype == np.float32
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
