"""Tests for gkdrl/tasks/registry.py and the package's exports."""

import pytest

import gkdrl.tasks
from gkdrl.tasks import base
from gkdrl.tasks import registry
from gkdrl.tasks import word_tokenizer


def test_registry_names():
  assert sorted(registry.TASKS) == ["arithmetic", "facts", "gsm8k", "xsum"]
  assert registry.DEFAULT_TASK == "facts"


def test_make_task_passes_arguments():
  task = registry.make_task(num_train=12, num_validation=3, num_test=4)
  assert task.name == "facts"
  assert isinstance(task, base.Task)
  assert [len(task.splits[s]) for s in base.SPLITS] == [12, 3, 4]
  task = registry.make_task("arithmetic", num_train=5, num_validation=2,
                            num_test=2, seed=4)
  assert task.name == "arithmetic" and set(task.reward_fns) == {"accuracy"}


def test_make_task_hub_tasks_take_a_tokenizer(tmp_path):
  path = tmp_path / "gsm8k.jsonl"
  path.write_text("".join(
      f'{{"question": "q{i}", "answer": "#### {i}"}}\n' for i in range(20)))
  tokenizer = word_tokenizer.make_word_tokenizer(["####"])
  task = registry.make_task("gsm8k", tokenizer=tokenizer,
                            data_files=str(path), cache_dir=str(tmp_path))
  assert task.name == "gsm8k" and task.tokenizer is tokenizer


def test_unknown_name_lists_valid_names():
  with pytest.raises(ValueError, match=(
      r"task name must be one of \['arithmetic', 'facts', 'gsm8k', 'xsum'\], "
      r"got 'wmt'")):
    registry.make_task("wmt")


def test_unknown_argument_is_rejected():
  with pytest.raises(TypeError, match="num_epochs"):
    registry.make_task("facts", num_epochs=3)


def test_public_names_are_exported():
  names = ["ArithmeticConfig", "DEFAULT_TASK", "DatasetUnavailableError",
           "FactCheck", "FactsConfig", "SPLITS", "TASKS", "Task", "TaskBatch",
           "TextRewardFn", "bucket_length", "bucket_sizes", "check_facts",
           "coverage_reward", "exact_match_reward", "extract_answer",
           "fact_counts", "factuality_reward", "make_arithmetic_task",
           "make_facts_task", "make_gsm8k_task", "make_task",
           "make_word_tokenizer", "make_xsum_task"]
  for name in names:
    assert hasattr(gkdrl.tasks, name), name
