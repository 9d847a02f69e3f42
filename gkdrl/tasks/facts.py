"""The `facts` task: summarise the central person of a generated document.

The built-in default task, small enough to learn in minutes on two CPU cores
and with an exact entailment oracle (`facts_oracle`) in place of an NLI model.

A document opens with a fact about its central person, then states the rest
of that person's facts among the two or three facts of each of one or two
distractor people (`FactsConfig` allows up to three), in random order, with a
sentence linking the central person to a distractor ("Ada met Ben in Oslo
."). The central person always has a job and a city and one or two (up to
three) of food, pet and hobby; every person has distinct values. The
reference summary states all of the central person's facts in a fixed order
(job and city, then food, pet, hobby). With the default sizes:

    document : Leo takes care of a dog . in the evenings Tess practises
    pottery . Tess and Leo are old friends . Leo lives in Delhi . Leo has a
    job as a dentist . Gus eats mangoes every day . Gus takes care of a canary
    . the favourite food of Tess is pears . summary :
    -> Leo is a dentist from Delhi . Leo has a dog .

Documents are 34 to 80 words, summaries 11 to 16, the vocabulary 196 words.
Distractors tend to have the relations the central person lacks, which
tempts a weak model into unsupported claims, and their values sit near the
central person's, which tempts it into contradictions.

Rewards: "factuality" (oracle fraction of supported claims) and "coverage"
(fraction of the reference's facts stated correctly);
`facts_oracle.fact_counts` gives the detailed counts.
"""

import dataclasses
import random

from gkdrl import validation
from gkdrl.tasks import base
from gkdrl.tasks import facts_grammar as grammar
from gkdrl.tasks import facts_oracle
from gkdrl.tasks import generated


@dataclasses.dataclass(frozen=True, kw_only=True)
class FactsConfig(generated.GeneratedTaskConfig):
  """Configuration of the `facts` task.

  Sizes and seed (num_train, num_validation, num_test, seed) are those of
  `generated.GeneratedTaskConfig`.

  Attributes:
    min_distractors: fewest distractor people per document, in [1, 3].
    max_distractors: most distractor people, in [min_distractors, 3].
    min_optional_facts: fewest of food/pet/hobby the central person has,
      in [1, 3].
    max_optional_facts: most of them, in [min_optional_facts, 3].
  """

  min_distractors: int = 1
  max_distractors: int = 2
  min_optional_facts: int = 1
  max_optional_facts: int = 2

  def __post_init__(self):
    super().__post_init__()
    # At most 3 distractors: each relation needs distinct values for all
    # people, and sentences must stay within the documented lengths.
    _check_range("distractors", self.min_distractors, self.max_distractors,
                 1, 3)
    _check_range("optional_facts", self.min_optional_facts,
                 self.max_optional_facts, 1, len(grammar.OPTIONAL_RELATIONS))


def _check_range(name, low, high, lowest, highest):
  validation.check_int(f"min_{name}", low, lowest, highest)
  validation.check_int(f"max_{name}", high, low, highest)


def _render_fact(rng: random.Random, name: str, relation: str,
                 value: str) -> str:
  template = rng.choice(grammar.DOCUMENT_TEMPLATES[relation])
  return grammar.render(template, name=name, **{relation: value})


def reference_summary(name: str, facts: dict[str, str]) -> str:
  """The reference summary of a person with `facts` (relation -> value).

  Args:
    name: the central person.
    facts: relation -> value, including "job" and "city".

  Returns:
    "<name> is a <job> from <city> ." then a sentence per optional fact, in
    the order food, pet, hobby.
  """
  sentences = [grammar.render(grammar.SUMMARY_TEMPLATES[0], name=name,
                              job=facts["job"], city=facts["city"])]
  for relation in grammar.OPTIONAL_RELATIONS:
    if relation in facts:
      template = next(t for t in grammar.SUMMARY_TEMPLATES[3:]
                      if f"{{{relation}}}" in t)
      sentences.append(grammar.render(template, name=name,
                                      **{relation: facts[relation]}))
  return " ".join(sentences)


def sample_example(rng: random.Random, config: FactsConfig
                   ) -> tuple[str, str]:
  """Draws one (document, reference summary) pair.

  Args:
    rng: the split's random stream.
    config: the task configuration.

  Returns:
    (document, summary) as space-separated words.
  """
  num_distractors = rng.randint(config.min_distractors,
                                config.max_distractors)
  names = rng.sample(grammar.NAMES, num_distractors + 1)
  # Column j of `values` belongs to person j: distinct values per relation.
  values = {r: rng.sample(grammar.VALUES[r], num_distractors + 1)
            for r in grammar.RELATIONS}
  optional = rng.sample(
      grammar.OPTIONAL_RELATIONS,
      rng.randint(config.min_optional_facts, config.max_optional_facts))
  central = {r: values[r][0] for r in grammar.RELATIONS
             if r in grammar.CORE_RELATIONS or r in optional}
  missing = [r for r in grammar.RELATIONS if r not in central]
  sentences = [_render_fact(rng, names[0], r, v) for r, v in central.items()]
  for j in range(1, num_distractors + 1):
    relations = [rng.choice(missing)] if missing else []
    others = [r for r in grammar.RELATIONS if r not in relations]
    relations += rng.sample(others, rng.randint(2, 3) - len(relations))
    sentences += [_render_fact(rng, names[j], r, values[r][j])
                  for r in relations]
  # The place is the second person's city, so "X visits Y in <city>" never
  # contradicts Y's home; for the central person's name in the first slot
  # it is a city that is not theirs, a tempting wrong answer.
  pair = [0, rng.randrange(1, num_distractors + 1)]
  rng.shuffle(pair)
  sentences.append(grammar.render(
      rng.choice(grammar.SOCIAL_TEMPLATES), name=names[pair[0]],
      other=names[pair[1]], city=values["city"][pair[1]]))
  opening = sentences.pop(rng.randrange(len(central)))
  rng.shuffle(sentences)
  document = " ".join([opening] + sentences)
  return document, reference_summary(names[0], central)


def make_facts_task(**kwargs) -> base.Task:
  """Builds the `facts` task.

  Args:
    **kwargs: `FactsConfig` fields (num_train, num_validation, num_test,
      seed, ...).

  Returns:
    The `Task`, with reward_fns "factuality" and "coverage".
  """
  config = FactsConfig(**kwargs)
  return generated.make_generated_task(
      "facts", config,
      words=grammar.vocabulary(),
      sample_fn=lambda rng: sample_example(rng, config),
      prompt_template=grammar.PROMPT_TEMPLATE,
      reward_fns={"factuality": facts_oracle.factuality_reward,
                  "coverage": facts_oracle.coverage_reward},
  )
