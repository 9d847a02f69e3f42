"""Tests of the oracle-labelled preference set derived from `facts`."""

import pytest

from gkdrl import tasks
from gkdrl.tasks import facts_grammar
from gkdrl.tasks import facts_oracle


def test_the_oracle_prefers_every_chosen_summary():
  pairs = tasks.facts_preference_pairs(60, seed=3)
  assert len(pairs) == 60
  for pair in pairs:
    chosen = facts_oracle.check_facts(pair["source"], pair["chosen"])
    rejected = facts_oracle.check_facts(pair["source"], pair["rejected"])
    assert chosen.score > rejected.score
    assert pair["prompt"] == facts_grammar.PROMPT_TEMPLATE.format(
        source=pair["source"])
    # The two summaries differ in exactly one word (the swapped value).
    a, b = pair["chosen"].split(), pair["rejected"].split()
    assert len(a) == len(b) and sum(x != y for x, y in zip(a, b)) == 1


def test_seeded_and_config_aware():
  assert (tasks.facts_preference_pairs(5, seed=1)
          == tasks.facts_preference_pairs(5, seed=1))
  assert (tasks.facts_preference_pairs(5, seed=1)
          != tasks.facts_preference_pairs(5, seed=2))
  three = tasks.facts_preference_pairs(5, seed=1, min_distractors=3,
                                       max_distractors=3)
  assert three != tasks.facts_preference_pairs(5, seed=1)
  with pytest.raises(ValueError, match="num_pairs=0 is not allowed"):
    tasks.facts_preference_pairs(0)
