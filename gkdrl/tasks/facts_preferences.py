"""An offline preference set derived from the `facts` task.

Each pair holds a `facts` prompt and two summaries of its document, each
the reference with some of its facts' values swapped for other values of
the same relation (half the time one that the document mentions for another
person, a tempting error). How many values a summary has swapped is drawn
uniformly from 0 to `max_swaps` (every fact by default), so the set mixes
pairs one value apart, the hardest, with pairs whose quality differs more,
as human preference data does. The task's oracle
(`facts_oracle.check_facts`) decides which is "chosen": the summary with
the larger fraction of supported claims. Pairs the oracle cannot tell apart
are skipped. So a reward model trained on the set can be checked against
the oracle on held-out pairs, with no hub and no model download.
`max_swaps=1` gives the hardest set only: the reference against a copy
with one value swapped.
"""

import random

from gkdrl import validation
from gkdrl.tasks import facts
from gkdrl.tasks import facts_grammar as grammar
from gkdrl.tasks import facts_oracle

_RELATION_OF = {v: r for r, values in grammar.VALUES.items() for v in values}


def _corrupt(rng: random.Random, document: str, summary: str,
             max_swaps: int | None) -> str:
  """`summary` with 0 to `max_swaps` value words (uniformly many, at most
  all) replaced by other values of their relations."""
  words = summary.split()
  slots = [i for i, w in enumerate(words) if w in _RELATION_OF]
  limit = len(slots) if max_swaps is None else min(max_swaps, len(slots))
  in_text = set(document.split())
  for i in rng.sample(slots, rng.randint(0, limit)):
    relation = _RELATION_OF[words[i]]
    others = [v for v in grammar.VALUES[relation] if v != words[i]]
    in_document = [v for v in others if v in in_text]
    words[i] = rng.choice(in_document if in_document and rng.random() < 0.5
                          else others)
  return " ".join(words)


def facts_preference_pairs(num_pairs: int, *, seed: int = 0,
                           max_swaps: int | None = None,
                           **config) -> list[dict[str, str]]:
  """`num_pairs` oracle-labelled preference pairs.

  Args:
    num_pairs: how many pairs, >= 1.
    seed: seed of the documents and of the corruptions.
    max_swaps: the most values swapped in one summary (None: every fact);
      1 pairs the reference with a copy one value apart.
    **config: `facts.FactsConfig` fields shaping the documents.

  Returns:
    Dicts with "prompt" (the task's prompt), "chosen" and "rejected"
    summaries, and "source" (the document).
  """
  validation.check_int("num_pairs", num_pairs, minimum=1)
  if max_swaps is not None:
    validation.check_int("max_swaps", max_swaps, minimum=1)
  task_config = facts.FactsConfig(**config)
  rng = random.Random(seed)
  pairs = []
  while len(pairs) < num_pairs:
    document, reference = facts.sample_example(rng, task_config)
    first, second = (_corrupt(rng, document, reference, max_swaps)
                     for _ in range(2))
    scores = [facts_oracle.check_facts(document, s).score
              for s in (first, second)]
    if scores[0] == scores[1]:
      continue
    chosen, rejected = ((first, second) if scores[0] > scores[1]
                        else (second, first))
    pairs.append(dict(
        prompt=grammar.PROMPT_TEMPLATE.format(source=document),
        chosen=chosen, rejected=rejected, source=document))
  return pairs
