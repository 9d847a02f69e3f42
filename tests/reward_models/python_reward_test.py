"""Tests of Python-callable rewards, task oracles and the length penalty."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gkdrl import reward_models as rm


def _contains_target(sources, completions, targets):
  """An oracle with the tasks' signature: 1 if the target is mentioned."""
  assert len(sources) == len(completions) == len(targets)
  return np.array([t in c for c, t in zip(completions, targets)], np.float32)


INPUTS = rm.RewardInputs(sources=["q1", "q2", "q3"],
                         completions=["it is 4", "five", ""],
                         targets=["4", "6", "7"])


class TestPythonReward:

  def test_scores_and_dtype(self):
    model = rm.make_python_reward(lambda s, c, t: [len(x) for x in c],
                                  name="chars")
    out = model.score(model.init(jax.random.key(0)), INPUTS)
    assert model.on_host and model.name == "chars"
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [7, 4, 0])

  def test_default_name_is_function_name(self):
    assert rm.PythonReward(_contains_target).name == "_contains_target"

  def test_passes_none_for_missing_fields(self):
    seen = {}

    def fn(sources, completions, targets):
      seen.update(sources=sources, targets=targets)
      return np.zeros(len(completions))

    rm.make_python_reward(fn).score((), rm.RewardInputs(completions=["a"]))
    assert seen == {"sources": None, "targets": None}

  def test_required_targets(self):
    model = rm.make_python_reward(_contains_target, requires_targets=True)
    with pytest.raises(ValueError, match="targets"):
      model.score((), rm.RewardInputs(completions=["a"]))

  def test_wrong_shape_and_nan(self):
    bad_shape = rm.make_python_reward(lambda s, c, t: [1.0], name="one")
    with pytest.raises(ValueError, match="'one' returned shape"):
      bad_shape.score((), INPUTS)
    nan = rm.make_python_reward(lambda s, c, t: [0.0, np.nan, 1.0])
    with pytest.raises(ValueError, match="non-finite"):
      nan.score((), INPUTS)

  def test_not_callable(self):
    with pytest.raises(ValueError, match="callable"):
      rm.make_python_reward("rougeL")


class TestTaskReward:

  def test_from_oracle_function(self):
    model = rm.task_reward(_contains_target, "contains")
    out = model.score((), INPUTS)
    assert model.name == "contains"
    np.testing.assert_array_equal(out, [1.0, 0.0, 0.0])

  def test_from_task_reward_fns(self):

    class Task:
      name = "copy"
      reward_fns = {"contains": _contains_target,
                    "length": lambda s, c, t: [len(x) for x in c]}

    model = rm.task_reward(Task(), "contains")
    assert model.name == "contains" and model.on_host
    np.testing.assert_array_equal(model.score((), INPUTS), [1.0, 0.0, 0.0])
    np.testing.assert_array_equal(
        rm.task_reward(Task(), "length").score((), INPUTS), [7, 4, 0])
    with pytest.raises(ValueError, match=r"'contains', 'length'"):
      rm.task_reward(Task(), "accuracy")
    with pytest.raises(ValueError, match="name=None"):
      rm.task_reward(Task())

  def test_single_reward_task_needs_no_name(self):

    class Task:
      name = "arithmetic"
      reward_fns = {"accuracy": _contains_target}

    assert rm.task_reward(Task()).name == "accuracy"

  def test_needs_sources_and_targets(self):
    model = rm.task_reward(_contains_target)
    with pytest.raises(ValueError, match="sources"):
      model.score((), rm.RewardInputs(completions=["a"], targets=["a"]))

  def test_rejects_object_without_reward_fns(self):
    with pytest.raises(ValueError, match="reward_fns"):
      rm.task_reward(object())


class TestLengthPenalty:

  def test_tokens_on_device_in_jit(self):
    model = rm.LengthPenalty(scale=0.25, unit="tokens", free_length=1)
    mask = jnp.array([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]], bool)
    out = jax.jit(model.score)((), rm.RewardInputs(completion_mask=mask))
    assert not model.on_host and out.dtype == jnp.float32
    np.testing.assert_allclose(out, [-0.5, 0.0, 0.0])

  @pytest.mark.parametrize("unit,expected", [("words", [-0.3, -0.1, 0.0]),
                                             ("chars", [-0.7, -0.4, 0.0])])
  def test_text_units(self, unit, expected):
    model = rm.make_length_penalty(scale=0.1, unit=unit)
    out = model.score((), INPUTS)
    assert model.on_host and out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=1e-6)

  def test_tokens_need_mask(self):
    with pytest.raises(ValueError, match="completion_mask"):
      rm.make_length_penalty().score((), INPUTS)

  @pytest.mark.parametrize("kwargs,field", [
      (dict(scale=-1.0), "scale"), (dict(unit="bytes"), "unit"),
      (dict(free_length=-2), "free_length")])
  def test_bad_config(self, kwargs, field):
    with pytest.raises(ValueError, match=field):
      rm.make_length_penalty(**kwargs)
