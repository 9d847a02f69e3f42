"""Reference-based text rewards: ROUGE F-measure and GSM8K exact match."""

from collections.abc import Sequence
import decimal
import re

import numpy as np

from gkdrl.reward_models import base

# rouge-score implements rouge1 ... rouge9, rougeL and rougeLsum.
ROUGE_METRICS = tuple(f"rouge{n}" for n in range(1, 10)) + (
    "rougeL", "rougeLsum"
)
ANSWER_FALLBACKS = ("last_number", "none")
ANSWER_MARKER = "####"
_NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?|-?\$?\.\d+")


def make_rouge_reward(
    metric: str | Sequence[str] = "rougeL",
    *,
    use_stemmer: bool = True,
    name: str | None = None,
) -> base.RewardModel:
  """ROUGE F-measure of each completion against its target (reference).

  Uses Google's `rouge-score` package (the scorer of the GKD paper's XSum
  experiments). With several metrics the reward is their mean F-measure.
  "rougeLsum" splits summaries into sentences at newlines, as rouge-score
  does.

  Args:
    metric: one of `ROUGE_METRICS` or a sequence of them.
    use_stemmer: apply the Porter stemmer before matching.
    name: metric name; defaults to the metric names joined by "+".

  Returns:
    A host `RewardModel` returning `np.ndarray [B] float32` in [0, 1]. It
    needs `inputs.completions` and `inputs.targets`.
  """
  from rouge_score import rouge_scorer  # pylint: disable=g-import-not-at-top

  metrics = (metric,) if isinstance(metric, str) else tuple(metric)
  if not metrics:
    raise ValueError("metric must name at least one ROUGE metric; got ().")
  for m in metrics:
    if m not in ROUGE_METRICS:
      raise ValueError(
          f"Unknown ROUGE metric={m!r}; allowed: {ROUGE_METRICS}."
      )
  if name is None:
    name = "+".join(metrics)
  scorer = rouge_scorer.RougeScorer(list(metrics), use_stemmer=use_stemmer)

  def init(key):
    del key
    return ()

  def score(params, inputs):
    del params
    batch_size = base.check_inputs(
        inputs, required=["completions", "targets"], model=name
    )
    rewards = np.zeros((batch_size,), np.float64)
    for i, (completion, target) in enumerate(
        zip(inputs.completions, inputs.targets)):
      scores = scorer.score(target, completion)
      rewards[i] = np.mean([scores[m].fmeasure for m in metrics])
    return base.check_rewards(rewards, batch_size, name)

  return base.RewardModel(name=name, on_host=True, init=init, score=score)


def normalize_answer(answer: str) -> str:
  """Canonical form of a final answer: numbers by value, text lower-cased.

  "1,000", "$1000" and "1000.00" all become "1000"; a trailing period is
  dropped; non-numeric answers are stripped, lower-cased and have their
  internal whitespace collapsed.
  """
  text = answer.strip().rstrip(".").strip()
  number = text.replace(",", "").replace("$", "")
  try:
    value = decimal.Decimal(number)
  except decimal.InvalidOperation:
    return " ".join(text.lower().split())
  if not value.is_finite():
    return " ".join(text.lower().split())
  if value == value.to_integral_value():
    return str(int(value))
  return format(value.normalize(), "f")


def extract_final_answer(text: str, *, fallback: str = "none"):
  """The final answer of a GSM8K-style solution, normalised, or None.

  The answer follows the last "####" marker: its first number if it has one,
  otherwise its first non-empty line. Without a marker, `fallback`
  "last_number" takes the last number in the text and "none" gives None.

  Args:
    text: a solution or completion.
    fallback: "last_number" or "none".

  Returns:
    The answer as `normalize_answer` writes it, or None when there is none.
  """
  if fallback not in ANSWER_FALLBACKS:
    raise ValueError(
        f"fallback={fallback!r} must be one of {ANSWER_FALLBACKS}."
    )
  if ANSWER_MARKER in text:
    tail = text.rsplit(ANSWER_MARKER, 1)[1]
    match = _NUMBER.search(tail)
    if match:
      return normalize_answer(match.group())
    lines = [line for line in tail.splitlines() if line.strip()]
    return normalize_answer(lines[0]) if lines else None
  if fallback == "last_number":
    numbers = _NUMBER.findall(text)
    return normalize_answer(numbers[-1]) if numbers else None
  return None


def make_exact_match_reward(
    *, fallback: str = "none", name: str = "exact_match"
) -> base.RewardModel:
  """1.0 where a completion's final answer equals its target's, else 0.0.

  Targets are GSM8K answers ("... #### 72") or bare answers ("72"); a target
  with a "####" marker contributes the answer after it, a target without one
  is the answer itself. Answers are compared after `normalize_answer`, so
  "#### 1,000" matches "1000". A completion without an answer scores 0.

  Args:
    fallback: how to read a completion without "####" (see
      `extract_final_answer`). The default "none" gives it 0, as the GSM8K
      task's own oracle does, so the policy is rewarded for the format;
      "last_number" is the lenient evaluation of models never taught it.
    name: metric name.

  Returns:
    A host `RewardModel` returning `np.ndarray [B] float32` in {0, 1}. It
    needs `inputs.completions` and `inputs.targets`; an empty target raises
    ValueError.
  """
  if fallback not in ANSWER_FALLBACKS:
    raise ValueError(
        f"fallback={fallback!r} must be one of {ANSWER_FALLBACKS}."
    )

  def init(key):
    del key
    return ()

  def score(params, inputs):
    del params
    batch_size = base.check_inputs(
        inputs, required=["completions", "targets"], model=name
    )
    rewards = np.zeros((batch_size,), np.float32)
    for i, (completion, target) in enumerate(
        zip(inputs.completions, inputs.targets)):
      if ANSWER_MARKER in target:
        expected = extract_final_answer(target, fallback="none")
      else:
        expected = normalize_answer(target) if target.strip() else None
      if expected is None:
        raise ValueError(
            f"Reward model {name!r}: targets[{i}]={target!r:.80} holds no "
            "answer."
        )
      answer = extract_final_answer(completion, fallback=fallback)
      rewards[i] = float(answer == expected)
    return rewards

  return base.RewardModel(name=name, on_host=True, init=init, score=score)
