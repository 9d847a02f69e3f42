"""Exact entailment oracle of the `facts` task.

The oracle reads a summary sentence by sentence (a sentence ends with the
word "."). A sentence that matches a summary or document template of
`facts_grammar` with a known name and known values is a claim of one fact
(two for "<name> is a <job> from <city> ."). Against the document's stated
facts each claimed fact is

  supported     the document states exactly that fact;
  contradicted  the document states another value for that name and relation
                (every relation is functional);
  unsupported   the document states nothing about that name and relation,
                which covers invented people (a hallucination).

Every other sentence, and words after the last "." (an unfinished sentence),
count once as `unparsed`. The factuality score is

  supported / (supported + contradicted + unsupported + unparsed),

and 0.0 when that denominator is 0 (an empty or whitespace-only summary), so
the score is always a finite number in [0, 1]; neither saying nothing nor
appending garbage earns reward. Coverage is the fraction of the reference
summary's facts that the summary claims and the document supports.
"""

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from gkdrl.tasks import base
from gkdrl.tasks import facts_grammar


class FactCheck(NamedTuple):
  """Counts of one summary's claims against one document."""

  supported: int  # claimed facts the document states
  contradicted: int  # claimed facts whose value the document states otherwise
  unsupported: int  # claimed facts the document says nothing about
  unparsed: int  # sentences (or an unfinished tail) that are no claim

  @property
  def num_claims(self) -> int:
    return self.supported + self.contradicted + self.unsupported

  @property
  def score(self) -> float:
    """supported / (claims + unparsed); 0.0 for an empty summary."""
    return self.supported / max(1, self.num_claims + self.unparsed)


def summary_facts(summary: str) -> tuple[list[facts_grammar.Fact], int]:
  """Parses a summary into claimed facts.

  Args:
    summary: words separated by whitespace (special tokens already removed).

  Returns:
    (facts, unparsed): claimed (name, relation, value) facts in order, and the
    number of sentences or unfinished tails that are not claims.
  """
  sentences, rest = facts_grammar.split_sentences(summary)
  facts, unparsed = [], int(bool(rest))
  for words in sentences:
    claim = facts_grammar.parse_claim(words)
    if claim is None:
      unparsed += 1
    else:
      facts.extend(claim)
  return facts, unparsed


def check_facts(document: str, summary: str) -> FactCheck:
  """Checks every claim of `summary` against the facts `document` states.

  Args:
    document: a `facts` task document (the "source" column).
    summary: a summary, e.g. a decoded completion.

  Returns:
    The `FactCheck` counts; `.score` is the factuality reward.
  """
  stated = facts_grammar.parse_document(document)
  claims, unparsed = summary_facts(summary)
  supported = contradicted = unsupported = 0
  for name, relation, value in claims:
    truth = stated.get((name, relation))
    if truth is None:
      unsupported += 1
    elif truth == value:
      supported += 1
    else:
      contradicted += 1
  return FactCheck(supported, contradicted, unsupported, unparsed)


def fact_counts(sources: Sequence[str], completions: Sequence[str]
                ) -> dict[str, np.ndarray]:
  """Detailed oracle counts for a batch.

  Args:
    sources: B documents.
    completions: B summaries.

  Returns:
    "supported", "contradicted", "unsupported", "unparsed", "claims" ->
    [B] int32 counts, and "score" -> [B] float32 factuality.
  """
  base.check_same_length(sources=sources, completions=completions)
  checks = [check_facts(d, s) for d, s in zip(sources, completions)]
  counts = {field: np.array([getattr(c, field) for c in checks], np.int32)
            for field in FactCheck._fields}
  counts["claims"] = np.array([c.num_claims for c in checks], np.int32)
  counts["score"] = np.array([c.score for c in checks], np.float32)
  return counts


def factuality_reward(sources: Sequence[str], completions: Sequence[str],
                      targets: Sequence[str]) -> np.ndarray:
  """[B] float32 oracle fraction of supported claims (`FactCheck.score`).

  Args:
    sources: B documents.
    completions: B summaries to score.
    targets: B reference summaries (unused; part of the reward interface).

  Returns:
    [B] float32 in [0, 1].
  """
  base.check_same_length(sources=sources, completions=completions,
                         targets=targets)
  return fact_counts(sources, completions)["score"]


def coverage_reward(sources: Sequence[str], completions: Sequence[str],
                    targets: Sequence[str]) -> np.ndarray:
  """[B] float32 fraction of the reference's facts the summary gets right.

  A reference fact is covered when the completion claims it and the document
  supports it. Rewards length and content, which factuality alone does not.

  Args:
    sources: B documents.
    completions: B summaries to score.
    targets: B reference summaries, each with at least one claim.

  Returns:
    [B] float32 in [0, 1].

  Raises:
    ValueError: if a target claims no fact (it is not a `facts` summary).
  """
  base.check_same_length(sources=sources, completions=completions,
                         targets=targets)
  rewards = np.zeros(len(sources), np.float32)  # [B]
  for i, (document, completion, target) in enumerate(
      zip(sources, completions, targets)):
    reference = set(summary_facts(target)[0])
    if not reference:
      raise ValueError(f"targets[{i}] claims no fact: {target!r}")
    stated = facts_grammar.parse_document(document)
    claimed = {f for f in summary_facts(completion)[0]
               if stated.get(f[:2]) == f[2]}
    rewards[i] = len(reference & claimed) / len(reference)
  return rewards
