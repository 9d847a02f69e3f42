"""Tests of ROUGE and GSM8K exact-match rewards on hand-made examples."""

import numpy as np
import pytest

from gkdrl import reward_models as rm


def _score(model, completions, targets):
  out = model.score(model.init(None), rm.RewardInputs(
      completions=completions, targets=targets))
  assert out.dtype == np.float32 and out.shape == (len(completions),)
  return out


class TestRouge:
  # Reference: 6 tokens, 5 bigrams. Prediction "the cat sat": 3 matching
  # unigrams (P=1, R=1/2), 2 matching bigrams (P=1, R=2/5), LCS 3.
  REF, PRED = "The cat sat on the mat.", "the cat sat"

  @pytest.mark.parametrize("metric,expected", [
      ("rouge1", 2 * 0.5 / 1.5), ("rouge2", 2 * 0.4 / 1.4),
      ("rougeL", 2 * 0.5 / 1.5)])
  def test_hand_computed_f_measure(self, metric, expected):
    out = _score(rm.RougeReward(metric, use_stemmer=False), [self.PRED],
                 [self.REF])
    np.testing.assert_allclose(out, [expected], rtol=1e-6)

  def test_mean_of_metrics_and_batch(self):
    model = rm.make_rouge_reward(("rouge1", "rouge2"), use_stemmer=False)
    out = _score(model, [self.PRED, self.REF, "dog"], [self.REF] * 3)
    assert model.name == "rouge1+rouge2"
    np.testing.assert_allclose(
        out, [(2 / 3 + 4 / 7) / 2, 1.0, 0.0], rtol=1e-6)

  def test_stemmer(self):
    stem = _score(rm.make_rouge_reward("rouge1"), ["cats"], ["cat"])
    plain = _score(rm.make_rouge_reward("rouge1", use_stemmer=False),
                   ["cats"], ["cat"])
    np.testing.assert_array_equal(stem, [1.0])
    np.testing.assert_array_equal(plain, [0.0])

  def test_empty_completion_scores_zero(self):
    np.testing.assert_array_equal(
        _score(rm.make_rouge_reward(), [""], [self.REF]), [0.0])

  def test_unknown_metric(self):
    with pytest.raises(ValueError, match="rougeX"):
      rm.make_rouge_reward("rougeX")

  def test_needs_targets(self):
    model = rm.make_rouge_reward()
    with pytest.raises(ValueError, match="targets"):
      model.score((), rm.RewardInputs(completions=["a"]))


class TestExactMatch:
  TARGET = "She has 16 - 3 - 4 = 9 eggs, sold at $2: 9 * 2 = 18.\n#### 18"

  @pytest.mark.parametrize("completion,expected", [
      ("So she makes 9 * 2 = 18 dollars.\n#### 18", 1.0),
      ("#### $18.00", 1.0),
      ("#### 18.", 1.0),
      ("She earns 18 dollars.", 0.0),  # no "####": no answer by default
      ("#### 17", 0.0),
      ("#### 180", 0.0),
      ("I do not know.", 0.0),
      ("", 0.0),
  ])
  def test_gsm8k_answers(self, completion, expected):
    out = _score(rm.ExactMatchReward(), [completion], [self.TARGET])
    np.testing.assert_array_equal(out, [expected])

  def test_bare_targets_and_thousands(self):
    out = _score(rm.make_exact_match_reward(),
                 ["#### 1,000", "#### -3", "#### 0.5", "#### Paris"],
                 ["1000", "-3", ".50", "paris"])
    np.testing.assert_array_equal(out, [1.0, 1.0, 1.0, 1.0])

  def test_last_number_fallback(self):
    out = _score(rm.make_exact_match_reward(fallback="last_number"),
                 ["She earns 18 dollars.", "She earns 18 dollars, not 20.",
                  "#### 18", "I do not know."], [self.TARGET] * 4)
    np.testing.assert_array_equal(out, [1.0, 0.0, 1.0, 0.0])

  def test_empty_target_is_an_error(self):
    with pytest.raises(ValueError, match=r"targets\[0\]"):
      _score(rm.make_exact_match_reward(), ["#### 1"], ["  "])

  def test_bad_fallback(self):
    with pytest.raises(ValueError, match="fallback"):
      rm.make_exact_match_reward(fallback="first_number")

  def test_extract_and_normalize(self):
    assert rm.extract_final_answer("a 3 b\n#### 1,234.50 apples") == "1234.5"
    assert rm.extract_final_answer("no digits", fallback="last_number") is None
    assert rm.normalize_answer(" $2,000. ") == "2000"
    assert rm.normalize_answer("The  Answer") == "the answer"
