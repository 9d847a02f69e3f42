"""Tests for gkdrl/tasks/arithmetic.py."""

import re

import numpy as np
import pytest

from gkdrl.tasks import answers
from gkdrl.tasks import arithmetic

# An independent reading of the stories: (pattern, count -> new count).
_STORY = [
    (r"(\w+) has (\d+) (\w+) \.", lambda c, m: int(m[2])),
    (r"(\w+) buys (\d+) more (\w+) \.", lambda c, m: c + int(m[2])),
    (r"(\w+) gives (\w+) (\d+) more (\w+) \.", lambda c, m: c + int(m[3])),
    (r"(\w+) gives (\d+) (\w+) to (\w+) \.", lambda c, m: c - int(m[2])),
    (r"(\w+) loses (\d+) (\w+) \.", lambda c, m: c - int(m[2])),
    (r"(\w+) finds (\d+) boxes with (\d+) (\w+) each \.",
     lambda c, m: c + int(m[2]) * int(m[3])),
    (r"(\w+) doubles the (\w+) \.", lambda c, m: 2 * c),
]


def _simulate(question):
  sentences = [s.strip() + " ." for s in question.split(" .")[:-1]]
  count, counts = None, []
  for sentence in sentences:
    matches = [(p, f) for p, f in _STORY if re.fullmatch(p, sentence)]
    assert len(matches) == 1, sentence
    pattern, update = matches[0]
    count = update(count, re.fullmatch(pattern, sentence))
    counts.append(count)
  assert re.search(r"how many (\w+) does (\w+) have now \?$", question)
  return counts


@pytest.fixture(scope="module")
def task():
  return arithmetic.make_arithmetic_task(num_train=500, num_validation=20,
                                         num_test=20, seed=2)


def test_solutions_are_correct_and_small(task):
  steps = set()
  for row in task.splits["train"]:
    counts = _simulate(row["source"])
    steps.add(len(counts) - 1)
    *work, final = row["target"].split(" . ")
    for equation in work:
      a, op, b, eq, c = equation.split()
      assert eq == "="
      assert int(c) == {"+": int(a) + int(b), "-": int(a) - int(b),
                        "*": int(a) * int(b)}[op]
      assert all(0 <= int(n) <= 99 for n in (a, b, c))
    assert final == f"#### {counts[-1]}"
    assert answers.extract_answer(row["target"]) == counts[-1]
    assert all(0 < n <= 99 for n in counts)
  assert steps == {2, 3}


def test_accuracy_reward(task):
  test = task.splits["test"]
  sources, targets = list(test["source"]), list(test["target"])
  accuracy = task.reward_fns["accuracy"]
  np.testing.assert_array_equal(accuracy(sources, targets, targets), 1.0)
  answers_only = [t.split(" . ")[-1] for t in targets]
  np.testing.assert_array_equal(accuracy(sources, answers_only, targets), 1.0)
  off_by_one = [f"#### {answers.extract_answer(t) + 1}" for t in targets]
  np.testing.assert_array_equal(accuracy(sources, off_by_one, targets), 0.0)
  no_marker = [t.replace("####", "") for t in targets]
  np.testing.assert_array_equal(accuracy(sources, no_marker, targets), 0.0)


def test_vocabulary_has_every_number_up_to_max_value():
  task = arithmetic.make_arithmetic_task(num_train=50, num_validation=5,
                                         num_test=5, max_value=30,
                                         min_steps=4, max_steps=4)
  vocab = task.tokenizer.get_vocab()
  assert all(str(n) in vocab for n in range(31)) and "31" not in vocab
  for row in task.splits["train"]:
    counts = _simulate(row["source"])
    assert len(counts) == 5 and all(0 < n <= 30 for n in counts)


@pytest.mark.parametrize("kwargs, match", [
    ({"min_steps": 0}, "min_steps=0 is not allowed; it must be an int in"),
    ({"max_steps": 7}, "max_steps=7 is not allowed; it must be an int in"),
    ({"min_steps": 3, "max_steps": 2},
     "max_steps=2 is not allowed; it must be an int in"),
    ({"max_value": 19}, "max_value=19 is not allowed; it must be an int in"),
])
def test_config_rejects_bad_values(kwargs, match):
  with pytest.raises(ValueError, match=match):
    arithmetic.ArithmeticConfig(**kwargs)
