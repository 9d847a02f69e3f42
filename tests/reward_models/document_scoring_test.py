"""Tests of the document-level NLI aggregations (SummaC-ZS and friends)."""

import numpy as np
import pytest

from gkdrl import reward_models as rm
from gkdrl.reward_models import document_scoring as ds

SOURCE = "Alpha one. Beta two. Gamma three. Delta four. Epsilon five."
SUMMARY = "Alpha one! Gamma three? Zeta."
# A stub NLI score: the fraction of the hypothesis' words found in the
# premise, so every expected value below can be worked out by hand.
STUB = lambda p, h: np.array(
    [np.mean([w in pi.split() for w in hi.split()]) for pi, hi in zip(p, h)])


def test_chunk_by_sentences():
  assert ds.chunk_by_sentences(SOURCE, 2) == [
      "Alpha one. Beta two.", "Gamma three. Delta four.", "Epsilon five."]
  assert ds.chunk_by_sentences("", 3) == [""]


def test_summac_is_max_over_chunks_mean_over_sentences():
  chunker = lambda s: ds.chunk_by_sentences(s, 2)
  calls = []
  out = ds.document_scores(
      lambda p, h: calls.append(len(p)) or STUB(p, h), [SOURCE], [SUMMARY],
      granularity="summac", chunker=chunker)
  # Sentences "Alpha one!", "Gamma three?", "Zeta." against 3 chunks: the
  # stub gives "Alpha" (1 of 2 words, "one!" is not "one.") = 0.5 in chunk
  # 0, "Gamma" = 0.5 in chunk 1, "Zeta." = 0 everywhere.
  np.testing.assert_allclose(out, [(0.5 + 0.5 + 0.0) / 3])
  assert calls == [3 * 3]  # S * C pairs, in one call


def test_sentence_and_document_granularities_and_costs():
  premises, hypotheses, shapes = ds.pair_plan(
      [SOURCE, "x"], [SUMMARY, "y. z."], "sentence", chunker=None)
  assert shapes == [(1, 3), (1, 2)] and len(premises) == 5
  assert hypotheses[:3] == ["Alpha one!", "Gamma three?", "Zeta."]
  out = ds.fold_scores(np.array([0.2, 0.4, 0.9, 1.0, 0.0]), shapes)
  np.testing.assert_allclose(out, [0.5, 0.5], rtol=1e-6)
  premises, hypotheses, shapes = ds.pair_plan(
      [SOURCE], [SUMMARY], "document", chunker=None)
  assert (premises, hypotheses, shapes) == ([SOURCE], [SUMMARY], [(1, 1)])


def test_fold_checks_the_number_of_scores():
  with pytest.raises(ValueError, match="pairs"):
    ds.fold_scores(np.zeros(3), [(2, 2)])


class TestEntailmentConfig:

  def test_sentence_level_is_the_old_spelling_of_summac(self):
    with pytest.warns(DeprecationWarning, match="granularity='summac'"):
      config = rm.EntailmentConfig(sentence_level=True)
    assert config.granularity == "summac"
    with pytest.raises(ValueError, match="sentence_level=True is not"):
      rm.EntailmentConfig(sentence_level=True, granularity="sentence")

  @pytest.mark.parametrize("kwargs,message", [
      (dict(granularity="paragraph"), "granularity='paragraph' is not"),
      (dict(nli_score="neutral"), "nli_score='neutral' is not"),
      (dict(chunk_sentences=0), "chunk_sentences=0 is not"),
      (dict(chunk_sentences=2, chunk_tokens=8), "not both"),
  ])
  def test_rejects(self, kwargs, message):
    with pytest.raises(ValueError, match=message):
      rm.EntailmentConfig(**kwargs)


class TestWithTinyModel:

  def test_summac_by_sentences_with_entailment_minus_contradiction(
      self, numpy_checkpoints):
    reward = rm.EntailmentReward(numpy_checkpoints["bert"], rm.EntailmentConfig(
        granularity="summac", chunk_sentences=2,
        nli_score="entailment_minus_contradiction", batch_size=4,
        min_bucket=8))
    params = reward.init(None)
    source = ("The cat sat on the mat. A dog ran in the park. The tree is "
              "big.")
    summary = "The cat sat. The tree is red!"
    out = reward.score(params, rm.RewardInputs(sources=[source],
                                               completions=[summary]))
    chunks = ["The cat sat on the mat. A dog ran in the park.",
              "The tree is big."]
    sentences = ["The cat sat.", "The tree is red!"]
    # NLI_LABELS: 0 contradiction, 1 entailment.
    scores = np.array([[np.subtract(*reward.probabilities(
        params, [c], [s])[0, [1, 0]]) for s in sentences] for c in chunks])
    np.testing.assert_allclose(out, [scores.max(0).mean()], atol=1e-6)
    assert reward.contradiction_index == 0

  def test_sentence_granularity_is_the_mean_over_sentences(
      self, numpy_checkpoints):
    reward = rm.EntailmentReward(numpy_checkpoints["roberta"],
                                 rm.EntailmentConfig(granularity="sentence"))
    params = reward.init(None)
    source, summary = "The man eats food. The car is red.", "A man eats. Red."
    out = reward.score(params, rm.RewardInputs(sources=[source],
                                               completions=[summary]))
    probs = reward.probabilities(params, [source] * 2, ["A man eats.", "Red."])
    np.testing.assert_allclose(out, [probs[:, 1].mean()], atol=1e-6)
