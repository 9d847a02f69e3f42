"""Tests of the oracle-labelled preference set derived from `facts`."""

import pytest

from gkdrl import tasks
from gkdrl.tasks import facts_grammar
from gkdrl.tasks import facts_oracle


def _differing_words(pair):
  a, b = pair["chosen"].split(), pair["rejected"].split()
  assert len(a) == len(b)  # only values are swapped, word for word
  return sum(x != y for x, y in zip(a, b))


@pytest.mark.parametrize("max_swaps", [None, 1])
def test_the_oracle_prefers_every_chosen_summary(max_swaps):
  pairs = tasks.facts_preference_pairs(60, seed=3, max_swaps=max_swaps)
  assert len(pairs) == 60
  for pair in pairs:
    chosen = facts_oracle.check_facts(pair["source"], pair["chosen"])
    rejected = facts_oracle.check_facts(pair["source"], pair["rejected"])
    assert chosen.score > rejected.score
    assert pair["prompt"] == facts_grammar.PROMPT_TEMPLATE.format(
        source=pair["source"])


def test_pairs_mix_quality_gaps_unless_one_swap_at_most():
  gaps = [_differing_words(p) for p in tasks.facts_preference_pairs(200)]
  # One value apart (the hardest pairs) up to every fact swapped.
  assert min(gaps) == 1 and max(gaps) >= 3
  for pair in tasks.facts_preference_pairs(60, seed=3, max_swaps=1):
    # The reference against a copy with one value swapped.
    assert _differing_words(pair) == 1
    assert facts_oracle.check_facts(pair["source"], pair["chosen"]).score == 1


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
  with pytest.raises(ValueError, match="max_swaps=0 is not allowed"):
    tasks.facts_preference_pairs(5, max_swaps=0)
