"""Tests for gkdrl/tasks/base.py: buckets, collation and batching."""

import itertools

import datasets
import numpy as np
import pytest

from gkdrl.tasks import base
from gkdrl.tasks import word_tokenizer

WORDS = [f"w{i}" for i in range(50)] + ["doc", ":", "answer"]
TEMPLATE = "doc : {source} answer :"


def _rows(n, offset=0):
  # Row i has a source of 1 + i % 23 words and a target of 1 + i % 11 words.
  sources = [" ".join(f"w{(i + j) % 50}" for j in range(1 + i % 23))
             for i in range(offset, offset + n)]
  targets = [" ".join(f"w{(2 * i + j) % 50}" for j in range(1 + i % 11))
             for i in range(offset, offset + n)]
  return {"source": sources,
          "prompt": [TEMPLATE.format(source=s) for s in sources],
          "target": targets}


@pytest.fixture(scope="module")
def task():
  tokenizer = word_tokenizer.make_word_tokenizer(WORDS)
  splits = {"train": datasets.Dataset.from_dict(_rows(37)),
            "validation": datasets.Dataset.from_dict(_rows(5, 100)),
            "test": datasets.Dataset.from_dict(_rows(5, 200))}
  # Prompts are up to 1 + 2 + 23 + 2 = 28 tokens, targets up to 12 with EOS.
  return base.build_task("toy", tokenizer, splits, prompt_template=TEMPLATE,
                         max_prompt_tokens=24, max_target_tokens=10,
                         reward_fns={})


@pytest.mark.parametrize("max_length, expected", [
    (72, (8, 16, 32, 64, 72)), (64, (8, 16, 32, 64)), (8, (8,)), (5, (5,)),
    (9, (8, 9))])
def test_bucket_sizes(max_length, expected):
  assert base.bucket_sizes(max_length) == expected


def test_bucket_length():
  buckets = (8, 16, 20)
  assert [base.bucket_length(n, buckets) for n in (1, 8, 9, 16, 17, 20)] == [
      8, 8, 16, 16, 20, 20]
  with pytest.raises(ValueError, match="exceeds the largest bucket"):
    base.bucket_length(21, buckets)


def test_task_fields(task):
  assert task.prompt_buckets == (8, 16, 24)
  assert task.target_buckets == (8, 10)
  assert task.format_prompt("w1 w2") == "doc : w1 w2 answer :"


def _check_batch(task, batch, examples):
  tokenizer = task.tokenizer
  b = len(examples["source"])
  p, t = batch.prompt_tokens.shape[1], batch.target_tokens.shape[1]
  assert batch.prompt_tokens.shape == batch.prompt_mask.shape == (b, p)
  assert batch.target_tokens.shape == batch.target_mask.shape == (b, t)
  assert batch.prompt_tokens.dtype == np.int32
  assert batch.target_tokens.dtype == np.int32
  assert batch.prompt_mask.dtype == bool and batch.target_mask.dtype == bool
  assert batch.sources == examples["source"]
  assert batch.targets == examples["target"]
  longest_prompt = longest_target = 0
  for i in range(b):
    n = int(batch.prompt_mask[i].sum())
    # Left padding: the valid tokens form one block at the right end.
    assert batch.prompt_mask[i, p - n:].all()
    assert (batch.prompt_tokens[i, :p - n] == tokenizer.pad_token_id).all()
    ids = tokenizer(examples["prompt"][i])["input_ids"]
    tail = len(tokenizer("answer :", add_special_tokens=False)["input_ids"])
    if len(ids) > p:
      ids = ids[:p - tail] + ids[-tail:]
    assert batch.prompt_tokens[i, p - n:].tolist() == ids
    m = int(batch.target_mask[i].sum())
    # Right padding, ending with EOS.
    assert batch.target_mask[i, :m].all()
    assert (batch.target_tokens[i, m:] == tokenizer.pad_token_id).all()
    ids = tokenizer(examples["target"][i], add_special_tokens=False)[
        "input_ids"][:t - 1] + [tokenizer.eos_token_id]
    assert batch.target_tokens[i, :m].tolist() == ids
    longest_prompt, longest_target = max(longest_prompt, n), max(
        longest_target, m)
  return longest_prompt, longest_target


def test_collate_pads_to_the_smallest_bucket(task):
  examples = task.splits["train"][[0, 1, 2]]  # sources of 1-3 words
  batch = task.collate(examples)
  longest_prompt, longest_target = _check_batch(task, batch, examples)
  assert longest_prompt == 1 + 2 + 3 + 2 and longest_target == 3 + 1
  assert batch.prompt_tokens.shape[1] == 8  # smallest bucket >= 8
  assert batch.target_tokens.shape[1] == 8


def test_collate_fixed_shape_pads_to_the_maxima(task):
  examples = task.splits["train"][[0, 1]]
  batch = task.collate(examples, fixed_shape=True)
  _check_batch(task, batch, examples)
  assert batch.prompt_tokens.shape == (2, 24)
  assert batch.target_tokens.shape == (2, 10)


def test_collate_truncates_long_prompts_and_targets(task):
  examples = task.splits["train"][[22, 10]]  # 23-word source, 11-word target
  batch = task.collate(examples)
  _check_batch(task, batch, examples)
  assert batch.prompt_tokens.shape == (2, 24)
  assert batch.prompt_mask.sum(axis=1).tolist() == [24, 1 + 2 + 11 + 2]
  answer_colon = task.tokenizer.convert_tokens_to_ids(["answer", ":"])
  assert batch.prompt_tokens[:, -2:].tolist() == [answer_colon] * 2
  assert batch.prompt_tokens[0, 0] == task.tokenizer.bos_token_id
  assert batch.target_tokens.shape == (2, 10)
  assert batch.target_tokens[1, -1] == task.tokenizer.eos_token_id


def test_collate_rejects_unequal_columns(task):
  with pytest.raises(ValueError, match="equal, non-zero numbers"):
    task.collate({"source": ["w1"], "prompt": [], "target": ["w1"]})


def test_batches_in_order_without_seed(task):
  batches = list(task.batches("train", 8))
  assert [len(b.sources) for b in batches] == [8, 8, 8, 8, 5]
  assert sum((b.sources for b in batches), []) == task.splits["train"][
      "source"][:]
  for i, b in enumerate(batches):
    _check_batch(task, b, task.splits["train"][8 * i:8 * i + 8])
    assert b.prompt_tokens.shape[1] in task.prompt_buckets
    assert b.target_tokens.shape[1] in task.target_buckets


def test_batches_shuffle_by_seed_and_epoch(task):
  def order(seed, num_epochs=2):
    return [s for b in task.batches("train", 8, seed=seed,
                                    num_epochs=num_epochs) for s in b.sources]
  sources = list(task.splits["train"]["source"])
  first = order(seed=3)
  assert first == order(seed=3)
  assert first != order(seed=4)
  epoch0, epoch1 = first[:37], first[37:]
  assert sorted(epoch0) == sorted(sources) == sorted(epoch1)
  assert epoch0 != epoch1 and epoch0 != sources


def test_batches_drop_remainder_and_repeat_forever(task):
  batches = list(task.batches("train", 8, seed=0, drop_remainder=True))
  assert [len(b.sources) for b in batches] == [8, 8, 8, 8]
  forever = task.batches("train", 16, seed=0, num_epochs=None,
                         drop_remainder=True)
  taken = list(itertools.islice(forever, 7))
  assert all(b.prompt_tokens.shape[0] == 16 for b in taken)


@pytest.mark.parametrize("kwargs, match", [
    ({"split": "dev", "batch_size": 2}, "split must be one of"),
    ({"split": "train", "batch_size": 0}, "batch_size=0 is not allowed; it must be an int >= 1"),
    ({"split": "train", "batch_size": 2, "num_epochs": 0}, "num_epochs"),
    ({"split": "train", "batch_size": 2, "seed": 1.5}, "seed=1.5 is not allowed; it must be an int"),
    ({"split": "test", "batch_size": 6, "drop_remainder": True},
     "yields no batch"),
])
def test_batches_reject_bad_arguments(task, kwargs, match):
  with pytest.raises(ValueError, match=match):
    task.batches(**kwargs)


@pytest.mark.parametrize("template", [
    "no field", "{source} {source}", "{source} {other}", "{0} {source}", 3])
def test_build_task_rejects_bad_templates(task, template):
  with pytest.raises(ValueError, match="prompt_template must be"):
    base.build_task("toy", task.tokenizer, task.splits,
                    prompt_template=template, max_prompt_tokens=8,
                    max_target_tokens=8, reward_fns={})


@pytest.mark.parametrize("kwargs, match", [
    ({"max_prompt_tokens": 0}, "max_prompt_tokens=0 is not allowed; it must be an int >= 1"),
    ({"max_target_tokens": 1}, "max_target_tokens must be >= 2"),
])
def test_build_task_rejects_bad_lengths(task, kwargs, match):
  lengths = {"max_prompt_tokens": 8, "max_target_tokens": 8, **kwargs}
  with pytest.raises(ValueError, match=match):
    base.build_task("toy", task.tokenizer, task.splits,
                    prompt_template=TEMPLATE, reward_fns={}, **lengths)


def test_build_task_rejects_missing_splits_and_columns(task):
  with pytest.raises(ValueError, match="splits must be exactly"):
    base.build_task("toy", task.tokenizer, {"train": task.splits["train"]},
                    prompt_template=TEMPLATE, max_prompt_tokens=8,
                    max_target_tokens=8, reward_fns={})
  splits = dict(task.splits, test=task.splits["test"].remove_columns("prompt"))
  with pytest.raises(ValueError, match=r"split 'test' lacks columns \['prompt"):
    base.build_task("toy", task.tokenizer, splits, prompt_template=TEMPLATE,
                    max_prompt_tokens=8, max_target_tokens=8, reward_fns={})


def test_old_int_checks_warn_and_delegate_to_validation():
  with pytest.warns(DeprecationWarning, match="gkdrl.validation.check_int"):
    assert base.check_int("n", 3, 1, 5) == 3
  with pytest.warns(DeprecationWarning):
    with pytest.raises(ValueError, match=r"^n=0 is not allowed; it must be "
                       r"an int >= 1\.$"):
      base.check_positive_int("n", 0)
