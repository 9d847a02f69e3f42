"""Tests for gkdrl/tasks/facts_oracle.py on hand-written summaries."""

import numpy as np
import pytest

from gkdrl.tasks import facts_oracle

DOCUMENT = ("Ada works as a baker . Ben lives in Oslo . Ada lives in Lyon . "
            "Ada met Ben in Oslo . Ada owns a cat . Ben eats figs every day .")
REFERENCE = "Ada is a baker from Lyon . Ada has a cat ."


@pytest.mark.parametrize("summary, counts", [
    # (supported, contradicted, unsupported, unparsed)
    (REFERENCE, (3, 0, 0, 0)),
    ("Ada is a baker . Ada is from Lyon .", (2, 0, 0, 0)),
    # A fact in a document wording is a claim too.
    ("Ada owns a cat . Ben eats figs every day .", (2, 0, 0, 0)),
    # One contradicted attribute: Oslo is Ben's city, Ada lives in Lyon.
    ("Ada is a baker from Oslo . Ada has a cat .", (2, 1, 0, 0)),
    # A claim the document says nothing about (Ada's food is not stated).
    ("Ada is a baker from Lyon . Ada likes figs .", (2, 0, 1, 0)),
    # An invented person: Zoe is a name but not in the document.
    ("Zoe is a baker from Lyon .", (0, 0, 2, 0)),
    ("Ben is a pilot . Ada has a dog .", (0, 1, 1, 0)),
    ("", (0, 0, 0, 0)),
    ("   \n ", (0, 0, 0, 0)),
    ("cat cat the .", (0, 0, 0, 1)),
    ("blah blah", (0, 0, 0, 1)),
    (". . .", (0, 0, 0, 3)),
    ("<unk> <unk>", (0, 0, 0, 1)),
    # Unknown value, wrong article, lower-case name, reversed slots.
    ("Ada is a astronaut . Ada is an baker . ada has a cat . baker is a Ada .",
     (0, 0, 0, 4)),
    # An unfinished last sentence counts as unparsed, never as a claim.
    ("Ada is a baker . Ada has a", (1, 0, 0, 1)),
    ("Ada is a baker from Lyon", (0, 0, 0, 1)),
    # Repeating a supported claim still counts every claim.
    ("Ada has a cat . Ada has a cat .", (2, 0, 0, 0)),
    # Extra spaces and newlines do not matter.
    ("  Ada   has a cat .\nAda is from Lyon .  ", (2, 0, 0, 0)),
])
def test_check_facts_counts(summary, counts):
  check = facts_oracle.check_facts(DOCUMENT, summary)
  assert tuple(check) == counts
  supported, contradicted, unsupported, unparsed = counts
  assert check.num_claims == supported + contradicted + unsupported
  total = supported + contradicted + unsupported + unparsed
  expected = supported / total if total else 0.0
  assert check.score == pytest.approx(expected)


def test_fact_counts_and_factuality_reward_batch():
  summaries = [REFERENCE, "Ada is a baker from Oslo . Ada has a cat .", "",
               "garbage", "Ada is a baker . zzz ."]
  documents = [DOCUMENT] * len(summaries)
  counts = facts_oracle.fact_counts(documents, summaries)
  np.testing.assert_array_equal(counts["supported"], [3, 2, 0, 0, 1])
  np.testing.assert_array_equal(counts["contradicted"], [0, 1, 0, 0, 0])
  np.testing.assert_array_equal(counts["unsupported"], [0, 0, 0, 0, 0])
  np.testing.assert_array_equal(counts["unparsed"], [0, 0, 0, 1, 1])
  np.testing.assert_array_equal(counts["claims"], [3, 3, 0, 0, 1])
  for key in ("supported", "contradicted", "unsupported", "unparsed",
              "claims"):
    assert counts[key].dtype == np.int32 and counts[key].shape == (5,)
  rewards = facts_oracle.factuality_reward(documents, summaries,
                                           [REFERENCE] * 5)
  assert rewards.dtype == np.float32 and rewards.shape == (5,)
  assert np.isfinite(rewards).all()
  np.testing.assert_allclose(rewards, [1, 2 / 3, 0, 0, 0.5], rtol=1e-6)
  np.testing.assert_array_equal(rewards, counts["score"])


def test_coverage_reward():
  summaries = [REFERENCE, "Ada is a baker .",
               "Ada is a baker from Oslo . Ada owns a cat .",
               "Ada has a cat . Ada has a cat . Ben is from Oslo .", ""]
  rewards = facts_oracle.coverage_reward([DOCUMENT] * 5, summaries,
                                         [REFERENCE] * 5)
  assert rewards.dtype == np.float32 and rewards.shape == (5,)
  np.testing.assert_allclose(rewards, [1, 1 / 3, 2 / 3, 1 / 3, 0], rtol=1e-6)


def test_coverage_reward_rejects_targets_without_claims():
  with pytest.raises(ValueError, match=r"targets\[0\] claims no fact"):
    facts_oracle.coverage_reward([DOCUMENT], [REFERENCE], ["no claims here"])


def test_rewards_reject_unequal_lengths():
  with pytest.raises(ValueError, match="equal lengths"):
    facts_oracle.factuality_reward([DOCUMENT], [REFERENCE, REFERENCE],
                                   [REFERENCE])
  with pytest.raises(ValueError, match="equal lengths"):
    facts_oracle.fact_counts([DOCUMENT, DOCUMENT], [REFERENCE])


def test_document_with_two_values_is_rejected():
  with pytest.raises(ValueError, match="two values of 'city' for 'Ada'"):
    facts_oracle.check_facts("Ada lives in Lyon . Ada lives in Oslo .",
                             REFERENCE)
