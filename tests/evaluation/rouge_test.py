"""ROUGE on whitespace tokens: hand-computed F-measures."""

import pytest

from gkdrl import evaluation


def _f1(precision, recall):
  return 0.0 if precision + recall == 0 else (
      2 * precision * recall / (precision + recall))


def test_hand_example():
  # Prediction: 5 tokens, reference: 7 tokens, 5 shared unigrams (the "."
  # too), 3 of 4 prediction bigrams in the 6 reference bigrams, and the
  # longest common subsequence is the whole prediction.
  scores = evaluation.rouge_scores(["Leo is a dentist ."],
                                   ["Leo is a dentist from Delhi ."])
  assert scores["rouge1"] == pytest.approx(100 * _f1(5 / 5, 5 / 7))
  assert scores["rouge2"] == pytest.approx(100 * _f1(3 / 4, 3 / 6))
  assert scores["rougeL"] == pytest.approx(100 * _f1(5 / 5, 5 / 7))
  assert set(scores) == {"rouge1", "rouge2", "rougeL"}


def test_rouge_l_uses_the_longest_common_subsequence():
  # LCS "a c e" (3 of 5 and 3 of 4); unigrams all shared, no bigram shared.
  scores = evaluation.rouge_scores(["a b c d e"], ["a c e b"])
  assert scores["rougeL"] == pytest.approx(100 * _f1(3 / 5, 3 / 4))
  assert scores["rouge1"] == pytest.approx(100 * _f1(4 / 5, 4 / 4))
  assert scores["rouge2"] == 0.0


def test_keeps_punctuation_and_markers_that_the_default_tokenizer_drops():
  scores = evaluation.rouge_scores([". #### 42"], [". #### 42"])
  assert scores["rouge2"] == pytest.approx(100.0)
  # Only "." differs: two of three unigrams match.
  scores = evaluation.rouge_scores(["a b ."], ["a b !"])
  assert scores["rouge1"] == pytest.approx(100 * 2 / 3)


def test_lower_cases_and_does_not_stem():
  assert evaluation.rouge_scores(["LEO Eats"], ["leo eats"])["rouge2"] == (
      pytest.approx(100.0))
  assert evaluation.rouge_scores(["eats"], ["eat"])["rouge1"] == 0.0


def test_averages_over_pairs_and_empty_texts_score_zero():
  scores = evaluation.rouge_scores(["a b", "", "x"], ["a b", "a", ""])
  for key in ("rouge1", "rouge2", "rougeL"):
    assert scores[key] == pytest.approx(100.0 / 3)


def test_whitespace_tokenizer():
  assert evaluation.WhitespaceTokenizer().tokenize(" Ada  is\ta baker .\n") == [
      "ada", "is", "a", "baker", "."]


@pytest.mark.parametrize("predictions,references,match", [
    (["a"], ["a", "b"], "equal"),
    ([], [], "non-zero"),
    ("a", ["a"], "predictions"),
    (["a"], [None], r"references\[0\]"),
])
def test_bad_inputs_raise(predictions, references, match):
  with pytest.raises(ValueError, match=match):
    evaluation.rouge_scores(predictions, references)
