"""Tests of RewardInputs validation and weighted sums."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gkdrl import reward_models as rm


def _constant(name, values, on_host=True):
  """A reward model returning fixed values (host NumPy or device jnp)."""
  values = np.asarray(values, np.float32)

  def score(params, inputs):
    del params
    rm.check_inputs(inputs, model=name)
    return values if on_host else jnp.asarray(values)

  return rm.RewardModel(name=name, on_host=on_host, init=lambda key: (),
                        score=score)


class TestCheckInputs:

  def test_returns_batch_size_from_text_and_arrays(self):
    inputs = rm.RewardInputs(
        sources=["a", "b"], completions=("c", "d"),
        completion_tokens=np.zeros((2, 5), np.int32),
        completion_mask=np.ones((2, 5), bool))
    assert rm.check_inputs(inputs) == 2

  def test_mismatched_batch_lengths(self):
    inputs = rm.RewardInputs(sources=["a", "b"], completions=["c"])
    with pytest.raises(ValueError, match="disagree on the batch size"):
      rm.check_inputs(inputs)

  def test_text_and_array_batch_disagree(self):
    inputs = rm.RewardInputs(completions=["c"],
                             completion_mask=np.ones((3, 4), bool))
    with pytest.raises(ValueError, match="completion_mask"):
      rm.check_inputs(inputs)

  def test_single_string_rejected(self):
    with pytest.raises(ValueError, match="single str"):
      rm.check_inputs(rm.RewardInputs(completions="a summary"))

  def test_non_string_item_rejected(self):
    with pytest.raises(ValueError, match=r"completions\[1\]"):
      rm.check_inputs(rm.RewardInputs(completions=["a", 3]))

  def test_mask_shape_must_match_tokens(self):
    inputs = rm.RewardInputs(prompt_tokens=np.zeros((2, 3), np.int32),
                             prompt_mask=np.ones((2, 4), bool))
    with pytest.raises(ValueError, match="prompt_mask"):
      rm.check_inputs(inputs)

  def test_required_field_missing(self):
    with pytest.raises(ValueError, match="targets"):
      rm.check_inputs(rm.RewardInputs(completions=["a"]),
                      required=["targets"], model="rouge")

  def test_empty_inputs_rejected(self):
    with pytest.raises(ValueError, match="no fields"):
      rm.check_inputs(rm.RewardInputs())

  def test_arrays_only_drops_text(self):
    inputs = rm.RewardInputs(sources=["a"], completions=["b"], targets=["c"],
                             completion_mask=np.ones((1, 2), bool))
    stripped = inputs.arrays_only()
    assert stripped.sources is None and stripped.completions is None
    assert stripped.targets is None
    assert stripped.completion_mask is inputs.completion_mask


class TestCheckRewards:

  def test_wrong_shape(self):
    with pytest.raises(ValueError, match=r"expected \[B\]"):
      rm.check_rewards(np.zeros((2, 1)), 2, "m")

  def test_nan_rejected(self):
    with pytest.raises(ValueError, match="rows \\[1\\]"):
      rm.check_rewards([0.0, np.nan], 2, "m")

  def test_converts_to_float32(self):
    out = rm.check_rewards([1, 2], 2, "m")
    assert out.dtype == np.float32 and out.shape == (2,)


class TestWeightedSum:

  def test_host_sum_values_dtype_and_name(self):
    a = _constant("a", [1.0, 2.0, 3.0])
    b = _constant("b", [-1.0, 0.5, 4.0], on_host=False)
    total = rm.weighted_sum([(2.0, a), (0.5, b)])
    params = total.init(jax.random.key(0))
    out = total.score(params, rm.RewardInputs(completions=["x", "y", "z"]))
    assert total.on_host and total.name == "2*a+0.5*b"
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    np.testing.assert_allclose(out, [1.5, 4.25, 8.0], rtol=1e-6)

  def test_entailment_minus_length_penalty(self):
    ent = _constant("entailment", [0.9, 0.2])
    penalty = rm.make_length_penalty(scale=0.1, unit="words")
    total = rm.weighted_sum([(1.0, ent), (1.0, penalty)])
    out = total.score(total.init(jax.random.key(0)),
                      rm.RewardInputs(completions=["one two three", "one"]))
    np.testing.assert_allclose(out, [0.9 - 0.3, 0.2 - 0.1], rtol=1e-6)

  def test_device_sum_is_jittable(self):
    penalty = rm.make_length_penalty(scale=0.5, unit="tokens")
    bonus = _constant("bonus", [1.0, 1.0], on_host=False)
    total = rm.weighted_sum([(1.0, penalty), (3.0, bonus)])
    assert not total.on_host
    inputs = rm.RewardInputs(
        completions=["ab", "c"],
        completion_mask=np.array([[1, 1, 1, 0], [1, 0, 0, 0]], bool))
    params = total.init(jax.random.key(0))
    out = jax.jit(total.score)(params, inputs.arrays_only())
    assert out.dtype == jnp.float32 and out.shape == (2,)
    np.testing.assert_allclose(out, [3.0 - 1.5, 3.0 - 0.5], rtol=1e-6)

  @pytest.mark.parametrize("weight", [-0.5, float("nan"), float("inf")])
  def test_bad_weight(self, weight):
    with pytest.raises(ValueError, match="weight="):
      rm.weighted_sum([(weight, _constant("a", [1.0]))])

  def test_all_zero_weights(self):
    with pytest.raises(ValueError, match="all zero"):
      rm.weighted_sum([(0.0, _constant("a", [1.0]))])

  def test_empty_and_malformed_terms(self):
    with pytest.raises(ValueError, match="at least one"):
      rm.weighted_sum([])
    with pytest.raises(ValueError, match="pair"):
      rm.weighted_sum([_constant("a", [1.0])])
    with pytest.raises(ValueError, match="RewardModel"):
      rm.weighted_sum([(1.0, "rougeL")])

  def test_bad_component_output_is_reported(self):
    total = rm.weighted_sum([(1.0, _constant("short", [1.0]))])
    params = total.init(jax.random.key(0))
    with pytest.raises(ValueError, match=r"'short' returned shape \(1,\)"):
      total.score(params, rm.RewardInputs(completions=["a", "b"]))
    with pytest.raises(ValueError, match="0 params for 1 terms"):
      total.score((), rm.RewardInputs(completions=["a", "b"]))
