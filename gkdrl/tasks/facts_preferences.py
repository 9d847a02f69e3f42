"""An offline preference set derived from the `facts` task.

Each pair holds a `facts` prompt and two summaries of its document: the
reference and a copy with one fact's value swapped for another value of the
same relation (half the time one that the document mentions for another
person, a tempting error). The task's oracle (`facts_oracle.check_facts`)
decides which is "chosen": the summary with the larger fraction of supported
claims. Pairs the oracle cannot tell apart are skipped. So a reward model
trained on the set can be checked against the oracle on held-out pairs, with
no hub and no model download.
"""

import random

from gkdrl import validation
from gkdrl.tasks import facts
from gkdrl.tasks import facts_grammar as grammar
from gkdrl.tasks import facts_oracle

_RELATION_OF = {v: r for r, values in grammar.VALUES.items() for v in values}


def _corrupt(rng: random.Random, document: str, summary: str) -> str:
  """`summary` with one value word replaced by another of its relation."""
  words = summary.split()
  slots = [i for i, w in enumerate(words) if w in _RELATION_OF]
  i = rng.choice(slots)
  relation = _RELATION_OF[words[i]]
  in_document = [v for v in grammar.VALUES[relation]
                 if v != words[i] and v in document.split()]
  others = [v for v in grammar.VALUES[relation] if v != words[i]]
  words[i] = rng.choice(in_document if in_document and rng.random() < 0.5
                        else others)
  return " ".join(words)


def facts_preference_pairs(num_pairs: int, *, seed: int = 0,
                     **config) -> list[dict[str, str]]:
  """`num_pairs` oracle-labelled preference pairs.

  Args:
    num_pairs: how many pairs, >= 1.
    seed: seed of the documents and of the corruptions.
    **config: `facts.FactsConfig` fields shaping the documents.

  Returns:
    Dicts with "prompt" (the task's prompt), "chosen" and "rejected"
    summaries, and "source" (the document).
  """
  validation.check_int("num_pairs", num_pairs, minimum=1)
  task_config = facts.FactsConfig(**config)
  rng = random.Random(seed)
  pairs = []
  while len(pairs) < num_pairs:
    document, reference = facts.sample_example(rng, task_config)
    corrupted = _corrupt(rng, document, reference)
    scores = [facts_oracle.check_facts(document, s).score
              for s in (reference, corrupted)]
    if scores[0] == scores[1]:
      continue
    chosen, rejected = ((reference, corrupted) if scores[0] > scores[1]
                        else (corrupted, reference))
    pairs.append(dict(
        prompt=grammar.PROMPT_TEMPLATE.format(source=document),
        chosen=chosen, rejected=rejected, source=document))
  return pairs
