"""The `arithmetic` task: multi-step word problems in GSM8K's format.

A problem states a starting count and two or three changes to it; the target
works through one equation per operation and ends with `#### <answer>`, the
format of GSM8K, scored by exact match of the final number
(`answers.exact_match_reward`). Every number, intermediate results included,
lies in [0, max_value] and is one word of the vocabulary, so a small model
can learn the task:

    question : Ada has 7 apples . Ada buys 5 more apples . Ada gives 3 apples
    to Ben . how many apples does Ada have now ? answer :
    -> 7 + 5 = 12 . 12 - 3 = 9 . #### 9

The final answer sits on the same line as the work (words are separated by
single spaces so the word-level tokenizer round-trips); `extract_answer`
finds it all the same.
"""

import dataclasses
import random

from gkdrl import validation
from gkdrl.tasks import answers
from gkdrl.tasks import base
from gkdrl.tasks import generated

NAMES = ("Ada", "Ben", "Cleo", "Dan", "Eva", "Finn", "Hana", "Ivo", "Jade",
         "Kai", "Lena", "Milo", "Nina", "Omar", "Rosa", "Sam")
ITEMS = ("apples", "pens", "coins", "stickers", "books", "marbles", "cards",
         "shells", "eggs", "stamps")
# operation -> story sentences; slots {name}, {other}, {item}, {n}, {k}, {m}.
STORY_TEMPLATES = {
    "add": ("{name} buys {n} more {item} .",
            "{other} gives {name} {n} more {item} ."),
    "subtract": ("{name} gives {n} {item} to {other} .",
                 "{name} loses {n} {item} ."),
    "boxes": ("{name} finds {k} boxes with {m} {item} each .",),
    "double": ("{name} doubles the {item} .",),
}
OPENING = "{name} has {n} {item} ."
QUESTION = "how many {item} does {name} have now ?"
PROMPT_TEMPLATE = "question : {source} answer :"
_SOLUTION_WORDS = ("+", "-", "*", "=", ".", "####")
_LARGEST_START = 20  # starting counts and added amounts stay small


@dataclasses.dataclass(frozen=True, kw_only=True)
class ArithmeticConfig(generated.GeneratedTaskConfig):
  """Configuration of the `arithmetic` task.

  Sizes and seed (num_train, num_validation, num_test, seed) are those of
  `generated.GeneratedTaskConfig`.

  Attributes:
    min_steps: fewest changes to the count, in [1, 6].
    max_steps: most changes, in [min_steps, 6].
    max_value: largest number anywhere in a problem, in [20, 999]; numbers
      0..max_value are words of the vocabulary.
  """

  min_steps: int = 2
  max_steps: int = 3
  max_value: int = 99

  def __post_init__(self):
    super().__post_init__()
    validation.check_int("min_steps", self.min_steps, 1, 6)
    validation.check_int("max_steps", self.max_steps, self.min_steps, 6)
    validation.check_int("max_value", self.max_value, 20, 999)


def _step(rng: random.Random, count: int, max_value: int
          ) -> tuple[str, str, dict[str, int], int]:
  """Draws one change: (operation, solution, slot values, new count)."""
  room = max_value - count
  operations = ["subtract"] if count >= 2 else []
  operations += ["add"] if room >= 2 else []
  operations += ["boxes"] if room >= 4 else []
  operations += ["double"] if count <= room else []
  operation = rng.choice(operations)
  if operation == "add":
    n = rng.randint(2, min(_LARGEST_START, room))
    return operation, f"{count} + {n} = {count + n} .", {"n": n}, count + n
  if operation == "subtract":
    n = rng.randint(1, count - 1)
    return operation, f"{count} - {n} = {count - n} .", {"n": n}, count - n
  if operation == "boxes":
    k = rng.randint(2, min(4, room // 2))
    m = rng.randint(2, min(5, room // k))
    new = count + k * m
    return (operation, f"{k} * {m} = {k * m} . {count} + {k * m} = {new} .",
            {"k": k, "m": m}, new)
  return operation, f"{count} * 2 = {2 * count} .", {}, 2 * count


def sample_example(rng: random.Random, config: ArithmeticConfig
                   ) -> tuple[str, str]:
  """Draws one (question, worked solution) pair.

  Args:
    rng: the split's random stream.
    config: the task configuration.

  Returns:
    (question, solution ending with "#### <answer>"), space-separated words.
  """
  name, other = rng.sample(NAMES, 2)
  item = rng.choice(ITEMS)
  count = rng.randint(2, _LARGEST_START)
  story = [OPENING.format(name=name, n=count, item=item)]
  solution = []
  for _ in range(rng.randint(config.min_steps, config.max_steps)):
    operation, work, slots, count = _step(rng, count, config.max_value)
    template = rng.choice(STORY_TEMPLATES[operation])
    story.append(template.format(name=name, other=other, item=item, **slots))
    solution.append(work)
  story.append(QUESTION.format(name=name, item=item))
  solution.append(f"#### {count}")
  return " ".join(story), " ".join(solution)


def vocabulary(max_value: int) -> list[str]:
  """Every word the arithmetic task can write, in a fixed order."""
  templates = [OPENING, QUESTION, PROMPT_TEMPLATE]
  templates += [t for ts in STORY_TEMPLATES.values() for t in ts]
  literals = [w for t in templates for w in t.split()
              if not w.startswith("{")]
  words = [str(n) for n in range(max_value + 1)] + list(NAMES) + list(ITEMS)
  return list(dict.fromkeys(words + literals + list(_SOLUTION_WORDS)))


def make_arithmetic_task(**kwargs) -> base.Task:
  """Builds the `arithmetic` task.

  Args:
    **kwargs: `ArithmeticConfig` fields (num_train, num_validation, num_test,
      seed, min_steps, max_steps, max_value).

  Returns:
    The `Task`, with reward_fns "accuracy" (exact match of `####` answers).
  """
  config = ArithmeticConfig(**kwargs)
  return generated.make_generated_task(
      "arithmetic", config,
      words=vocabulary(config.max_value),
      sample_fn=lambda rng: sample_example(rng, config),
      prompt_template=PROMPT_TEMPLATE,
      reward_fns={"accuracy": answers.exact_match_reward},
  )
