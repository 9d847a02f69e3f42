"""Tests for gkdrl/tasks/facts.py and facts_grammar.py."""

import itertools
import re

import numpy as np
import pytest

from gkdrl.tasks import facts
from gkdrl.tasks import facts_grammar as grammar
from gkdrl.tasks import facts_oracle


@pytest.fixture(scope="module")
def task():
  return facts.make_facts_task(num_train=400, num_validation=20, num_test=20,
                               seed=1)


def _template_regex(template):
  # An independent reading of a template: each slot is one word.
  return re.compile(re.sub(r"\\\{\w+\\\}", r"(\\S+)", re.escape(template)))


def _sentences(text):
  return [s.strip() + " ." for s in text.split(" .") if s.strip()]


def test_vocabularies_are_disjoint():
  groups = [grammar.NAMES] + [grammar.VALUES[r] for r in grammar.RELATIONS]
  for group in groups:
    assert len(set(group)) == len(group)
  for first, second in itertools.combinations(groups, 2):
    assert not set(first) & set(second)
  literals = {w for t in itertools.chain(
      grammar.SUMMARY_TEMPLATES, grammar.SOCIAL_TEMPLATES,
      *grammar.DOCUMENT_TEMPLATES.values()) for w in t.split()}
  assert not literals & set(itertools.chain(*groups))
  assert 150 <= len(grammar.vocabulary()) <= 400


@pytest.mark.parametrize(
    "template", grammar.SUMMARY_TEMPLATES + tuple(
        itertools.chain(*grammar.DOCUMENT_TEMPLATES.values())))
def test_every_claim_template_parses_to_its_facts(template):
  slots = re.findall(r"\{(\w+)\}", template)
  values = {s: grammar.VALUES[s][3] for s in slots if s != "name"}
  sentence = grammar.render(template, name="Iris", **values)
  words = sentence.split()
  assert words[-1] == "."
  assert sorted(grammar.parse_claim(words[:-1])) == sorted(
      ("Iris", r, v) for r, v in values.items())


@pytest.mark.parametrize("template", grammar.SOCIAL_TEMPLATES)
def test_social_sentences_state_no_fact(template):
  sentence = grammar.render(template, name="Ada", other="Ben", city="Oslo")
  assert grammar.parse_claim(sentence.split()[:-1]) is None
  assert grammar.parse_document(sentence) == {}


def test_documents_and_summaries_follow_the_grammar(task):
  fact_templates = list(itertools.chain(*grammar.DOCUMENT_TEMPLATES.values()))
  social = [_template_regex(t) for t in grammar.SOCIAL_TEMPLATES]
  fact_res = [_template_regex(t) for t in fact_templates]
  summary_res = [_template_regex(t) for t in grammar.SUMMARY_TEMPLATES]
  for row in task.splits["train"]:
    sentences = _sentences(row["source"])
    kinds = []
    for sentence in sentences:
      is_fact = any(r.fullmatch(sentence) for r in fact_res)
      is_social = any(r.fullmatch(sentence) for r in social)
      assert is_fact != is_social, sentence
      kinds.append(is_fact)
    assert sum(not k for k in kinds) == 1  # one social sentence
    assert kinds[0]  # the document opens with a fact
    summary = _sentences(row["target"])
    assert all(any(r.fullmatch(s) for r in summary_res) for s in summary)
    central = summary[0].split()[0]
    # Central person: named in the opening sentence and in every summary
    # sentence, with job and city first.
    assert central in sentences[0].split()
    assert all(s.split()[0] == central for s in summary)
    assert re.fullmatch(r"\S+ is a \S+ from \S+ \.", summary[0])
    assert 2 <= len(summary) <= 3


def test_people_have_distinct_values_and_distractors(task):
  distractor_counts = set()
  for row in task.splits["train"]:
    stated = grammar.parse_document(row["source"])
    people = {name for name, _ in stated}
    distractor_counts.add(len(people) - 1)
    for relation in grammar.RELATIONS:
      values = [v for (_, r), v in stated.items() if r == relation]
      assert len(values) == len(set(values))
    central = row["target"].split()[0]
    relations = {r for name, r in stated if name == central}
    assert set(grammar.CORE_RELATIONS) <= relations
    assert 3 <= len(relations) <= 4
    # The summary states every fact of the central person, nothing else.
    claims = facts_oracle.summary_facts(row["target"])[0]
    assert sorted(claims) == sorted(
        (central, r, stated[(central, r)]) for r in relations)
  assert distractor_counts == {1, 2}


def test_lengths_fit_a_small_model(task):
  words = [len(s.split()) for s in task.splits["train"]["source"]]
  summary_words = [len(s.split()) for s in task.splits["train"]["target"]]
  assert 30 <= min(words) and max(words) <= 85
  assert 40 <= np.mean(words) <= 70
  assert 10 <= min(summary_words) and max(summary_words) <= 20
  assert task.max_prompt_tokens <= 96 and task.max_target_tokens <= 24


def test_oracle_catches_swapped_attributes(task):
  # The errors a weak student makes: another person's value, or an attribute
  # the central person does not have.
  caught = {"contradicted": 0, "unsupported": 0}
  for row in task.splits["validation"]:
    stated = grammar.parse_document(row["source"])
    central = row["target"].split()[0]
    other = next(n for n, _ in stated if n != central)
    for relation in grammar.RELATIONS:
      theirs = stated.get((other, relation))
      if theirs is None:
        continue
      template = next(t for t in grammar.SUMMARY_TEMPLATES[1:]
                      if "{" + relation + "}" in t)
      claim = grammar.render(template, name=central, **{relation: theirs})
      check = facts_oracle.check_facts(row["source"], claim)
      kind = ("contradicted" if (central, relation) in stated
              else "unsupported")
      assert check._asdict()[kind] == 1 and check.supported == 0
      assert check.score == 0.0
      caught[kind] += 1
  assert caught["contradicted"] > 0 and caught["unsupported"] > 0


@pytest.mark.parametrize("kwargs, match", [
    ({"min_distractors": 0}, r"min_distractors=0 is not allowed; it must be an int in"),
    ({"max_distractors": 4}, r"max_distractors=4 is not allowed; it must be an int in"),
    ({"min_distractors": 2, "max_distractors": 1},
     r"max_distractors=1 is not allowed; it must be an int in \[2, 3\]\."),
    ({"min_optional_facts": 0}, "min_optional_facts"),
    ({"max_optional_facts": 4}, "max_optional_facts"),
])
def test_config_rejects_bad_ranges(kwargs, match):
  with pytest.raises(ValueError, match=match):
    facts.FactsConfig(**kwargs)


def test_config_ranges_change_the_documents():
  task = facts.make_facts_task(num_train=50, num_validation=5, num_test=5,
                               min_distractors=3, max_distractors=3,
                               min_optional_facts=3, max_optional_facts=3)
  for row in task.splits["train"]:
    stated = grammar.parse_document(row["source"])
    assert len({name for name, _ in stated}) == 4
    assert len(facts_oracle.summary_facts(row["target"])[0]) == 5
