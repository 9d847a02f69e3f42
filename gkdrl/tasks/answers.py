"""Final answers in GSM8K's `#### <number>` format, and exact-match scoring.

A solution ends with a line `#### <number>`. The answer is the number right
after the LAST "####" of the text: an optional "-", digits with optional
thousands commas, an optional decimal part, optionally preceded by "$";
anything after the number is ignored ("#### 72 apples" -> 72). Numbers
compare by value, so "1,000", "1000" and "1000.00" are the same answer.
Text without "####", or with no number right after it, has no answer and
scores 0.
"""

from collections.abc import Sequence
import decimal
import re

import numpy as np

from gkdrl.tasks import base

_ANSWER = re.compile(r"\s*\$?\s*(-?\s*\d[\d,]*(?:\.\d+)?)")


def extract_answer(text: str) -> decimal.Decimal | None:
  """The number after the last "####" of `text`, or None if there is none.

  Args:
    text: a worked solution, e.g. "2 + 3 = 5 . #### 5" or "...\\n#### 1,250".

  Returns:
    The answer as an exact Decimal, or None without "####" and a number.
  """
  _, marker, tail = text.rpartition("####")
  if not marker:
    return None
  match = _ANSWER.match(tail)
  if match is None:
    return None
  digits = re.sub(r"[\s,]", "", match.group(1))
  return decimal.Decimal(digits)


def exact_match_reward(sources: Sequence[str], completions: Sequence[str],
                       targets: Sequence[str]) -> np.ndarray:
  """[B] float32: 1.0 where a completion's final answer equals the target's.

  Args:
    sources: B questions (unused; part of the reward interface).
    completions: B generated solutions.
    targets: B reference solutions, each with a `#### <number>` answer.

  Returns:
    [B] float32 in {0, 1}; 0 for a completion without an answer.

  Raises:
    ValueError: if lengths differ or a target has no `#### <number>`.
  """
  base.check_same_length(sources=sources, completions=completions,
                         targets=targets)
  rewards = np.zeros(len(completions), np.float32)  # [B]
  for i, (completion, target) in enumerate(zip(completions, targets)):
    reference = extract_answer(target)
    if reference is None:
      raise ValueError(
          f"targets[{i}] has no '#### <number>' answer: {target!r}")
    rewards[i] = float(extract_answer(completion) == reference)
  return rewards
