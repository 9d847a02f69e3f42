"""Vocabularies and sentence grammar of the `facts` task.

A fact is a triple (name, relation, value). Every relation is functional (one
value per person) and each relation draws its values from its own fixed
vocabulary; no word belongs to two vocabularies, so a sentence parses in at
most one way.

Sentences are words separated by single spaces and end with the word ".".
A template is such a sentence with slots: "{name}" (a person) and
"{<relation>}" (a value of that relation). Documents state facts with
`DOCUMENT_TEMPLATES` and add `SOCIAL_TEMPLATES` sentences that mention people
and places but state no fact. Summaries use `SUMMARY_TEMPLATES`, e.g.

    Ada is a baker from Lyon . Ada likes pears . Ada has a cat .
"""

import itertools

NAMES = (
    "Ada", "Ben", "Cleo", "Dan", "Eva", "Finn", "Gus", "Hana", "Ivo", "Jade",
    "Kai", "Lena", "Milo", "Nina", "Omar", "Pia", "Quin", "Rosa", "Sam",
    "Tara", "Uma", "Vic", "Wren", "Xia", "Yuri", "Zoe", "Abel", "Bea",
    "Cyril", "Dora", "Emil", "Faye", "Gil", "Hugo", "Iris", "Jon", "Kira",
    "Leo", "Mara", "Ned", "Olga", "Paul", "Rita", "Saul", "Tess", "Ugo",
    "Vera", "Walt")
RELATIONS = ("job", "city", "food", "pet", "hobby")
# Jobs and pets start with a consonant so "a <value>" is always grammatical.
VALUES = {
    "job": ("baker", "pilot", "nurse", "farmer", "teacher", "doctor",
            "painter", "lawyer", "tailor", "sailor", "singer", "writer",
            "dentist", "plumber", "chemist", "banker", "builder", "cook",
            "judge", "miner", "potter", "weaver", "barber", "guard"),
    "city": ("Lyon", "Oslo", "Rome", "Lima", "Cairo", "Dublin", "Vienna",
             "Porto", "Quito", "Riga", "Kyoto", "Delhi", "Berlin", "Madrid",
             "Tunis", "Accra", "Sofia", "Prague", "Nairobi", "Hanoi",
             "Bogota", "Perth", "Seoul", "Zagreb"),
    "food": ("pears", "apples", "rice", "noodles", "soup", "cheese", "olives",
             "bread", "figs", "plums", "beans", "lentils", "dumplings",
             "pancakes", "tacos", "curry", "salmon", "mangoes", "carrots",
             "walnuts"),
    "pet": ("cat", "dog", "parrot", "rabbit", "hamster", "turtle", "goldfish",
            "pony", "lizard", "ferret", "canary", "goat", "snake", "duck"),
    "hobby": ("chess", "tennis", "painting", "hiking", "cycling", "knitting",
              "fishing", "dancing", "gardening", "swimming", "climbing",
              "pottery", "rowing", "juggling"),
}
# Relations every central person has (they open the reference summary);
# the others are optional.
CORE_RELATIONS = ("job", "city")
OPTIONAL_RELATIONS = ("food", "pet", "hobby")

DOCUMENT_TEMPLATES = {
    "job": ("{name} works as a {job} .",
            "{name} has a job as a {job} .",
            "{name} earns a living as a {job} ."),
    "city": ("{name} lives in {city} .",
             "{name} has a home in {city} .",
             "{name} settled in {city} years ago ."),
    "food": ("{name} eats {food} every day .",
             "the favourite food of {name} is {food} .",
             "{name} often cooks {food} ."),
    "pet": ("{name} owns a {pet} .",
            "{name} takes care of a {pet} .",
            "{name} adopted a {pet} last year ."),
    "hobby": ("{name} spends weekends on {hobby} .",
              "{name} is fond of {hobby} .",
              "in the evenings {name} practises {hobby} ."),
}
# "{other}" is a second person; "{city}" here is a place, not a fact.
SOCIAL_TEMPLATES = (
    "{name} met {other} in {city} .",
    "{name} and {other} are old friends .",
    "{name} often visits {other} in {city} .",
)
SUMMARY_TEMPLATES = (
    "{name} is a {job} from {city} .",
    "{name} is a {job} .",
    "{name} is from {city} .",
    "{name} likes {food} .",
    "{name} has a {pet} .",
    "{name} enjoys {hobby} .",
)
PROMPT_TEMPLATE = "document : {source} summary :"

Fact = tuple[str, str, str]  # (name, relation, value)
_NAME_SET = frozenset(NAMES)
_VALUE_SETS = {relation: frozenset(v) for relation, v in VALUES.items()}


def _compile(template: str) -> tuple[tuple[str, ...], dict[int, str]]:
  words = tuple(template.split())
  slots = {i: w[1:-1] for i, w in enumerate(words) if w.startswith("{")}
  return words, slots


_DOCUMENT_PATTERNS = tuple(
    _compile(t) for t in itertools.chain(*DOCUMENT_TEMPLATES.values()))
# A summary may also state a fact in any of the document's wordings.
_CLAIM_PATTERNS = tuple(_compile(t) for t in SUMMARY_TEMPLATES) + (
    _DOCUMENT_PATTERNS)


def render(template: str, **slots: str) -> str:
  """Fills a template's slots, e.g. render(t, name="Ada", job="baker")."""
  return template.format(**slots)


def split_sentences(text: str) -> tuple[list[list[str]], list[str]]:
  """Splits text into sentences (word lists ending before each ".").

  Args:
    text: words separated by whitespace.

  Returns:
    (sentences, rest): the complete sentences, without their ".", and the
    words after the last "." (an unfinished sentence; empty if none).
  """
  sentences, current = [], []
  for word in text.split():
    if word == ".":
      sentences.append(current)
      current = []
    else:
      current.append(word)
  return sentences, current


def _match(words: list[str], patterns) -> list[Fact] | None:
  for pattern, slots in patterns:
    if len(pattern) != len(words) + 1:  # patterns keep their final "."
      continue
    if all(p == w for i, (p, w) in enumerate(zip(pattern, words))
           if i not in slots):
      name = words[next(i for i, s in slots.items() if s == "name")]
      if name not in _NAME_SET:
        continue
      facts = [(name, s, words[i]) for i, s in slots.items() if s != "name"]
      if all(value in _VALUE_SETS[relation] for _, relation, value in facts):
        return facts
  return None


def parse_claim(words: list[str]) -> list[Fact] | None:
  """The facts a summary sentence claims, or None if it is not a claim.

  Args:
    words: one sentence without its final ".".

  Returns:
    One or two (name, relation, value) facts, or None when the sentence
    matches no summary or document template with known names and values.
  """
  return _match(words, _CLAIM_PATTERNS)


def parse_document(document: str) -> dict[tuple[str, str], str]:
  """The facts a document states: (name, relation) -> value.

  Sentences that state no fact (social sentences, anything unknown) are
  skipped.

  Args:
    document: a document written with `DOCUMENT_TEMPLATES`.

  Returns:
    (name, relation) -> value for every stated fact.

  Raises:
    ValueError: if the document states two values for one (name, relation).
  """
  facts = {}
  for words in split_sentences(document)[0]:
    for name, relation, value in _match(words, _DOCUMENT_PATTERNS) or ():
      if facts.setdefault((name, relation), value) != value:
        raise ValueError(
            f"document states two values of {relation!r} for {name!r}: "
            f"{facts[(name, relation)]!r} and {value!r}")
  return facts


def vocabulary() -> list[str]:
  """Every word the facts task can write, in a fixed order."""
  templates = itertools.chain(
      [PROMPT_TEMPLATE], SUMMARY_TEMPLATES, SOCIAL_TEMPLATES,
      *DOCUMENT_TEMPLATES.values())
  literals = [w for t in templates for w in t.split()
              if not w.startswith("{")]
  words = list(NAMES) + [v for r in RELATIONS for v in VALUES[r]] + literals
  return list(dict.fromkeys(words))
