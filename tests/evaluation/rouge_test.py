"""ROUGE: hand-computed F-measures and rouge-score's own reference values."""

import numpy as np
import pytest

from gkdrl import evaluation
from gkdrl import reward_models


def _f1(precision, recall):
  return 0.0 if precision + recall == 0 else (
      2 * precision * recall / (precision + recall))


# rouge-score's test pair (rouge/testdata/{target,prediction}.txt in
# google-research/google-research), checked there against ROUGE-1.5.5: lots
# of punctuation, and a few words that only match once stemmed.
TARGETS = (
    "ZfbCUIUuePaiLVUlCaUXxkpu XPeWing tUHfPMuZ',-Xd Y BrUgVJing "
    "M-HV.-DgdDaY.rFDJCRing Ht-LM EKBDXkME,yz'RBr q'wtion wIojNbN wL,b "
    ".a-'XdQggyFl jB-RPP'iyOIcUxer tKM L",
    "KsJdPByEtAor fE-Qg Dpdbring cw-WeFyu vC MoBL Xdn g wkvcEiGvKtion "
    "BDFhrpMtion psing sbKao Q m qiing LMmer HqqLFXe,XPY,J XsurkMer ,ed "
    "nB'wH'bWVHjWFEing tQ.saefZwJtKrTlixYpMMsJing UCAPwNHeYVjDing c T "
    "BUySKtion gMPfJpwGw p'NvxAoping eu pBwMBKV'I DNxqelhu,PHPxDEq,mtion SN")
PREDICTIONS = (
    "rFDJCRtion Ht-LM EKtDXkME,yz'RBr q'wer wrojNbN wL,b .a-'XdQggyFl "
    "jB-RPP'iyOIcUxi",
    "n cw-WeFyu vC MoBL Xdn g wkvcEiGvKtion BDFhrpMer pstion sbKao Q m qier "
    "LMmed HqqLFXe,XPY,J XsurkMeo ,ed nB'wH'bWVHjWFEer "
    "tQ.saefZwJtKrTlixYpMMNJtion UCAPwNHeYVjD")


@pytest.mark.parametrize("pair, key, expected", [
    # rouge-score's testRouge{1,2}AgainstRouge155WithStemming and
    # testRougeLAgainstRouge155 F-measures.
    (0, "rouge1", 0.51163), (1, "rouge1", 0.52941),
    (0, "rouge2", 0.39024), (1, "rouge2", 0.36364),
    (0, "rougeL", 0.51163),
])
def test_matches_rouge_score_reference_values(pair, key, expected):
  scores = evaluation.rouge_scores([PREDICTIONS[pair]], [TARGETS[pair]])
  assert scores[key] == pytest.approx(100 * expected, abs=1e-3)


def test_equals_the_rouge_reward():
  reward = reward_models.make_rouge_reward(["rouge2"])
  inputs = reward_models.RewardInputs(completions=list(PREDICTIONS),
                                      targets=list(TARGETS))
  per_row = np.asarray(reward.score(reward.init(None), inputs))
  scores = evaluation.rouge_scores(list(PREDICTIONS), list(TARGETS))
  assert scores["rouge2"] == pytest.approx(100 * per_row.mean(), abs=1e-4)


def test_hand_example():
  # Prediction: 4 tokens, reference: 6 tokens ("." is not a token), 4
  # shared unigrams, 3 of 3 prediction bigrams in the 5 reference bigrams,
  # and the longest common subsequence is the whole prediction.
  scores = evaluation.rouge_scores(["Leo is a dentist ."],
                                   ["Leo is a dentist from Delhi ."])
  assert scores["rouge1"] == pytest.approx(100 * _f1(4 / 4, 4 / 6))
  assert scores["rouge2"] == pytest.approx(100 * _f1(3 / 3, 3 / 5))
  assert scores["rougeL"] == pytest.approx(100 * _f1(4 / 4, 4 / 6))
  assert set(scores) == {"rouge1", "rouge2", "rougeL"}


def test_rouge_l_uses_the_longest_common_subsequence():
  # LCS "a c e" (3 of 5 and 3 of 4); unigrams all shared, no bigram shared.
  scores = evaluation.rouge_scores(["a b c d e"], ["a c e b"])
  assert scores["rougeL"] == pytest.approx(100 * _f1(3 / 5, 3 / 4))
  assert scores["rouge1"] == pytest.approx(100 * _f1(4 / 5, 4 / 4))
  assert scores["rouge2"] == 0.0


def test_punctuation_does_not_count():
  assert evaluation.rouge_scores(["a b ."], ["a b !"])["rouge1"] == (
      pytest.approx(100.0))
  # Nothing but punctuation leaves no token: the pair scores 0.
  assert evaluation.rouge_scores([". ####"], [". ####"])["rouge1"] == 0.0


def test_lower_cases_and_stems():
  assert evaluation.rouge_scores(["LEO Eats"], ["leo eats"])["rouge2"] == (
      pytest.approx(100.0))
  assert evaluation.rouge_scores(["eats"], ["eat"])["rouge1"] == (
      pytest.approx(100.0))


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
