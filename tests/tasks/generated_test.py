"""Properties every generated task (facts, arithmetic) must have."""

import pytest

from gkdrl.tasks import base
from gkdrl.tasks import generated
from gkdrl.tasks import registry

SIZES = {"num_train": 300, "num_validation": 40, "num_test": 40}
NAMES = ("facts", "arithmetic")


@pytest.fixture(scope="module", params=NAMES)
def task(request):
  return registry.make_task(request.param, seed=0, **SIZES)


def _rows(task):
  return {split: list(zip(*(task.splits[split][c] for c in base.COLUMNS)))
          for split in base.SPLITS}


def test_sizes_and_columns(task):
  for split in base.SPLITS:
    assert len(task.splits[split]) == SIZES[f"num_{split}"]
    assert task.splits[split].column_names == list(base.COLUMNS)
  for source, prompt, _ in _rows(task)["train"]:
    assert prompt == task.format_prompt(source)
    assert source in prompt


def test_splits_are_disjoint_and_rows_distinct(task):
  sources = {split: list(task.splits[split]["source"])
             for split in base.SPLITS}
  for split in base.SPLITS:
    assert len(set(sources[split])) == len(sources[split])
  assert not set(sources["train"]) & set(sources["validation"])
  assert not set(sources["train"]) & set(sources["test"])
  assert not set(sources["validation"]) & set(sources["test"])


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_per_seed(name):
  small = {"num_train": 30, "num_validation": 5, "num_test": 5}
  first = registry.make_task(name, seed=7, **small)
  again = registry.make_task(name, seed=7, **small)
  other = registry.make_task(name, seed=8, **small)
  bigger = registry.make_task(name, seed=7, **dict(small, num_train=60))
  for split in base.SPLITS:
    assert first.splits[split][:] == again.splits[split][:]
    assert first.splits[split]["source"][:] != other.splits[split]["source"][:]
  # The evaluation splits do not move when only the training size changes.
  assert first.splits["test"][:] == bigger.splits["test"][:]
  assert first.splits["validation"][:] == bigger.splits["validation"][:]
  assert bigger.splits["train"]["source"][:30] == first.splits["train"][
      "source"][:]
  assert first.tokenizer.get_vocab() == other.tokenizer.get_vocab()


def test_tokenizer_round_trips_all_text(task):
  tokenizer = task.tokenizer
  assert tokenizer.pad_token_id != tokenizer.eos_token_id
  for split in base.SPLITS:
    for column in base.COLUMNS:
      texts = list(task.splits[split][column])
      for text, ids in zip(texts, tokenizer(texts)["input_ids"]):
        assert tokenizer.unk_token_id not in ids
        assert tokenizer.decode(ids, skip_special_tokens=True) == text
        assert len(ids) == 1 + len(text.split())


def test_maxima_cover_every_example_without_truncation(task):
  assert task.max_prompt_tokens % 8 == 0 and task.max_target_tokens % 8 == 0
  prompt_lengths, target_lengths = [], []
  for batch in task.batches("train", 64, fixed_shape=True):
    assert batch.prompt_tokens.shape[1] == task.max_prompt_tokens
    assert batch.target_tokens.shape[1] == task.max_target_tokens
    # Nothing was cut: every prompt still starts with BOS, every target
    # decodes to the reference.
    first = batch.prompt_tokens.shape[1] - batch.prompt_mask.sum(axis=1)
    assert (batch.prompt_tokens[range(len(first)), first]
            == task.tokenizer.bos_token_id).all()
    for tokens, mask, target in zip(batch.target_tokens, batch.target_mask,
                                    batch.targets):
      assert tokens[mask][-1] == task.tokenizer.eos_token_id
      assert task.tokenizer.decode(tokens[mask][:-1]) == target
    prompt_lengths.extend(batch.prompt_mask.sum(axis=1).tolist())
    target_lengths.extend(batch.target_mask.sum(axis=1).tolist())
  assert task.max_prompt_tokens - 8 < max(prompt_lengths)
  assert task.max_target_tokens - 8 < max(target_lengths)


def test_reference_targets_earn_full_reward(task):
  train = task.splits["train"]
  sources, targets = list(train["source"]), list(train["target"])
  assert task.reward_fns
  for name, reward_fn in task.reward_fns.items():
    rewards = reward_fn(sources, targets, targets)
    assert rewards.shape == (len(sources),), name
    assert (rewards == 1.0).all(), name
    wrong = reward_fn(sources, targets[1:] + targets[:1], targets)
    assert wrong.mean() < 0.5, name


def test_generator_out_of_distinct_examples_raises():
  words = ["a", "b", "c"]
  with pytest.raises(ValueError, match="found only 3 distinct examples"):
    generated.generate_splits(
        "tiny", lambda rng: (rng.choice(words), "x"),
        {"train": 2, "validation": 1, "test": 1}, seed=0,
        prompt_template="{source}")


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("field, value", [
    ("num_train", 0), ("num_test", -1), ("num_validation", 2.5),
    ("seed", "0")])
def test_rejects_bad_sizes(name, field, value):
  with pytest.raises(ValueError, match=field):
    registry.make_task(name, **{field: value})
