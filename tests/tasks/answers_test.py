"""Tests for gkdrl/tasks/answers.py."""

import decimal

import numpy as np
import pytest

from gkdrl.tasks import answers


@pytest.mark.parametrize("text, expected", [
    ("#### 42", "42"),
    ("3 + 4 = 7 . #### 7", "7"),
    ("Natalia sold 48/2 = <<48/2=24>>24 clips.\n#### 72", "72"),
    ("#### 1,234", "1234"),
    ("####1,000,000", "1000000"),
    ("#### -5", "-5"),
    ("#### $12.50", "12.5"),
    ("#### 72 apples", "72"),
    ("#### 5.", "5"),
    ("#### 3 . oops #### 4", "4"),
])
def test_extract_answer(text, expected):
  assert answers.extract_answer(text) == decimal.Decimal(expected)


@pytest.mark.parametrize("text", [
    "", "the answer is 42", "####", "#### apples", "#### 5 . ####"])
def test_extract_answer_none(text):
  assert answers.extract_answer(text) is None


def test_exact_match_reward():
  targets = ["... #### 1,000", "#### -3", "#### 7", "#### 7", "#### 12",
             "#### 7"]
  completions = ["#### 1000", "x #### -3", "#### 7.00", "#### 8",
                 "12", ""]
  rewards = answers.exact_match_reward([""] * 6, completions, targets)
  assert rewards.dtype == np.float32 and rewards.shape == (6,)
  np.testing.assert_array_equal(rewards, [1, 1, 1, 0, 0, 0])


def test_exact_match_reward_rejects_targets_without_answer():
  with pytest.raises(ValueError, match=r"targets\[1\] has no"):
    answers.exact_match_reward(["q", "q"], ["#### 1", "#### 1"],
                               ["#### 1", "one"])


def test_exact_match_reward_rejects_unequal_lengths():
  with pytest.raises(ValueError, match="equal lengths"):
    answers.exact_match_reward(["q"], ["#### 1", "#### 2"], ["#### 1"])
