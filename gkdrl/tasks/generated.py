"""Turning a seeded example generator into a `Task` with disjoint splits.

A generator is `sample_fn(rng: random.Random) -> (source, target)`. Each
split draws from its own stream, seeded by (task name, split, seed), in the
order test, validation, train, and skips any source an earlier split (or an
earlier row) already holds. So splits are disjoint, the same seed gives the
same data on every machine, and the test set does not change when only the
number of training examples does.
"""

from collections.abc import Callable, Iterable, Mapping
import dataclasses
import random

import datasets

from gkdrl import validation
from gkdrl.tasks import base
from gkdrl.tasks import word_tokenizer

SampleFn = Callable[[random.Random], tuple[str, str]]
# A generator that fails this many times in a row to find a new source is
# out of distinct examples; asking for more is a configuration error.
_MAX_CONSECUTIVE_DUPLICATES = 1000


@dataclasses.dataclass(frozen=True, kw_only=True)
class GeneratedTaskConfig:
  """Sizes and seed that every generated task has.

  Attributes:
    num_train: training examples (>= 1).
    num_validation: validation examples (>= 1).
    num_test: test examples (>= 1).
    seed: data seed; the same seed gives the same splits everywhere.
  """

  num_train: int = 4000
  num_validation: int = 500
  num_test: int = 500
  seed: int = 0

  def __post_init__(self):
    for split in base.SPLITS:
      validation.check_int(f"num_{split}", getattr(self, f"num_{split}"), 1)
    validation.check_int("seed", self.seed)

  @property
  def sizes(self) -> dict[str, int]:
    """split -> number of examples."""
    return {split: getattr(self, f"num_{split}") for split in base.SPLITS}


def _round_up(n: int, multiple: int = 8) -> int:
  return -(-n // multiple) * multiple


def generate_splits(
    name: str,
    sample_fn: SampleFn,
    sizes: Mapping[str, int],
    *,
    seed: int,
    prompt_template: str,
) -> dict[str, datasets.Dataset]:
  """Draws disjoint splits of distinct examples from `sample_fn`.

  Args:
    name: the task name (part of every split's seed).
    sample_fn: `rng -> (source, target)`.
    sizes: "train", "validation", "test" -> number of examples (>= 1).
    seed: the data seed.
    prompt_template: format string with one "{source}" field.

  Returns:
    "train", "validation", "test" -> Dataset with base.COLUMNS.

  Raises:
    ValueError: if the generator cannot supply that many distinct sources.
  """
  seen = set()
  splits = {}
  for split in ("test", "validation", "train"):
    rng = random.Random(f"{name}:{split}:{seed}")
    rows = {column: [] for column in base.COLUMNS}
    duplicates = 0
    while len(rows["source"]) < sizes[split]:
      source, target = sample_fn(rng)
      if source in seen:
        duplicates += 1
        if duplicates >= _MAX_CONSECUTIVE_DUPLICATES:
          raise ValueError(
              f"{name}: found only {len(seen)} distinct examples for sizes "
              f"{dict(sizes)}; ask for fewer examples or widen the generator")
        continue
      duplicates = 0
      seen.add(source)
      rows["source"].append(source)
      rows["prompt"].append(prompt_template.format(source=source))
      rows["target"].append(target)
    splits[split] = datasets.Dataset.from_dict(rows)
  return {split: splits[split] for split in base.SPLITS}


def make_generated_task(
    name: str,
    config: GeneratedTaskConfig,
    *,
    words: Iterable[str],
    sample_fn: SampleFn,
    prompt_template: str,
    reward_fns: Mapping[str, base.TextRewardFn],
) -> base.Task:
  """Builds a generated task with a word-level tokenizer over `words`.

  The length maxima are the longest prompt (BOS included) and target (EOS
  included) over all splits, rounded up to a multiple of 8.

  Args:
    name: the task name.
    config: the task's sizes and seed.
    words: every word the generator and prompt template can write.
    sample_fn: `rng -> (source, target)`.
    prompt_template: format string with one "{source}" field.
    reward_fns: name -> `TextRewardFn`.

  Returns:
    The `Task`.

  Raises:
    ValueError: if generated text has a word outside `words` (a generator
      bug: the vocabulary must cover everything it writes).
  """
  base.check_prompt_template(prompt_template)
  tokenizer = word_tokenizer.make_word_tokenizer(words)
  splits = generate_splits(name, sample_fn, config.sizes, seed=config.seed,
                           prompt_template=prompt_template)
  max_prompt = max_target = 0
  for dataset in splits.values():
    prompt_ids = tokenizer(list(dataset["prompt"]))["input_ids"]
    target_ids = tokenizer(list(dataset["target"]),
                           add_special_tokens=False)["input_ids"]
    for ids in prompt_ids + target_ids:
      if tokenizer.unk_token_id in ids:
        raise ValueError(
            f"{name}: generated text has words outside the vocabulary: "
            f"{tokenizer.decode(ids)!r}")
    max_prompt = max(max_prompt, *map(len, prompt_ids))
    max_target = max(max_target, *(len(ids) + 1 for ids in target_ids))
  return base.build_task(
      name, tokenizer, splits, prompt_template=prompt_template,
      max_prompt_tokens=_round_up(max_prompt),
      max_target_tokens=_round_up(max_target), reward_fns=reward_fns)
