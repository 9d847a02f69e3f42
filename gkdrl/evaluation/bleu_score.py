"""Sentence BLEU and Self-BLEU on whitespace tokens, in plain Python.

BLEU (Papineni et al. 2002, https://aclanthology.org/P02-1040) of a
hypothesis h against references R, with N = `max_order`:

    BLEU = BP * exp( (1 / N) * sum_{n=1..N} log p_n )
    p_n  = sum_g min(count_h(g), max_{r in R} count_r(g))
           / max(1, number of n-grams of h)
    BP   = 1 if |h| > r*, else exp(1 - r* / |h|),

where g ranges over the n-grams of h and r* is the reference length closest
to |h| (the shorter one on a tie). Smoothing is Chen & Cherry (2014) method
1, the one Texygen uses: a precision whose numerator is 0 becomes
epsilon / max(1, #n-grams of h) with epsilon = 0.1. As in NLTK, a hypothesis
without a single matching unigram (in particular an empty one) scores 0, and
a hypothesis shorter than N tokens has orders with no n-gram at all, which
the smoothing turns into 0.1 each: even an exact copy of a reference then
scores below 100. The values equal `nltk.translate.bleu_score.sentence_bleu(
..., smoothing_function=SmoothingFunction().method1)` times 100, and, for
hypotheses of at least N words (or empty ones), sacrebleu's
`BLEU(smooth_method="floor", smooth_value=0.1, tokenize="none",
effective_order=False).sentence_score`; for shorter hypotheses sacrebleu
skips the orders without n-grams instead of smoothing them (tested). Ours
stays because Self-BLEU below is linear in the number of n-grams: 24x
sacrebleu's text-against-all-others loop on 128 texts
(benchmarks/bleu.py).

Self-BLEU (Zhu et al. 2018, Texygen, https://arxiv.org/abs/1802.01886)
measures how alike a set of texts is: the mean over i of the BLEU of text i
against all the other texts. Lower means more diverse.
"""

from collections import Counter
from collections.abc import Sequence
import math

EPSILON = 0.1  # Chen & Cherry method 1, NLTK's default epsilon.


def _check_max_order(max_order) -> int:
  if isinstance(max_order, bool) or not isinstance(max_order, int) or (
      max_order < 1):
    raise ValueError(f"max_order must be an int >= 1, got {max_order!r}")
  return max_order


def check_texts(name: str, texts) -> list[str]:
  """`texts` as a list, or a ValueError naming `name` if not all str."""
  if isinstance(texts, (str, bytes)):
    raise ValueError(
        f"{name} must be a sequence of strings, got a single string "
        f"{texts[:40]!r}")
  texts = list(texts)
  for i, text in enumerate(texts):
    if not isinstance(text, str):
      raise ValueError(
          f"{name}[{i}] must be a str, got {type(text).__name__} {text!r:.40}")
  return texts


def _ngram_counts(tokens: Sequence[str], max_order: int) -> list[Counter]:
  """Counters of the 1- to max_order-grams of `tokens` (index n - 1)."""
  return [Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))
          for n in range(1, max_order + 1)]


def _closest_length(lengths: Counter, hyp_len: int) -> int:
  """The length in `lengths` closest to `hyp_len`, the shorter on a tie."""
  return min((length for length, count in lengths.items() if count > 0),
             key=lambda length: (abs(length - hyp_len), length))


def _score(matches: Sequence[int], hyp_counts: Sequence[Counter], hyp_len: int,
           ref_len: int) -> float:
  """BLEU in [0, 100] from clipped matches per order and the lengths."""
  if hyp_len == 0 or matches[0] == 0:
    return 0.0
  max_order = len(matches)
  log_precision = 0.0
  for n in range(max_order):
    total = max(1, sum(hyp_counts[n].values()))
    log_precision += math.log((matches[n] or EPSILON) / total) / max_order
  brevity = 1.0 if hyp_len > ref_len else math.exp(1.0 - ref_len / hyp_len)
  return 100.0 * brevity * math.exp(log_precision)


def bleu(hypothesis: str, references: Sequence[str], *,
         max_order: int = 4) -> float:
  """Smoothed sentence BLEU of `hypothesis` against `references`.

  See the module docstring for the formula, the smoothing (Chen & Cherry
  method 1, epsilon 0.1) and the edge cases; tokens are whitespace-separated
  words, compared case-sensitively.

  Args:
    hypothesis: the text to score.
    references: one or more reference texts.
    max_order: N, the longest n-gram (4 is BLEU-4), >= 1.

  Returns:
    BLEU in [0, 100].

  Raises:
    ValueError: if `references` is empty or not a sequence of strings.
  """
  max_order = _check_max_order(max_order)
  if not isinstance(hypothesis, str):
    raise ValueError(
        f"hypothesis must be a str, got {type(hypothesis).__name__}")
  references = [r.split() for r in check_texts("references", references)]
  if not references:
    raise ValueError("references must hold at least one text, got none")
  tokens = hypothesis.split()
  hyp_counts = _ngram_counts(tokens, max_order)
  ref_counts = [_ngram_counts(r, max_order) for r in references]
  matches = [
      sum(min(count, max(rc[n][g] for rc in ref_counts))
          for g, count in hyp_counts[n].items())
      for n in range(max_order)
  ]
  ref_len = _closest_length(Counter(map(len, references)), len(tokens))
  return _score(matches, hyp_counts, len(tokens), ref_len)


def self_bleu(texts: Sequence[str], *, max_order: int = 4) -> float:
  """Self-BLEU of a set of texts: mean_i BLEU(texts[i], texts without i).

  Each text is the hypothesis once and every other text (duplicates
  included) is a reference; `bleu` gives the score. Equal to averaging
  `bleu(texts[i], texts[:i] + texts[i + 1:])`, computed in time linear in the
  number of n-grams: for every n-gram we keep its largest count, which text
  holds it, and the second largest, so the best count among the other texts
  needs no loop over them.

  Args:
    texts: the texts; lower Self-BLEU means more diverse.
    max_order: N, the longest n-gram, >= 1.

  Returns:
    Self-BLEU in [0, 100]; 0.0 for fewer than 2 texts (no pair to compare).
    Identical texts of at least `max_order` words give 100; empty texts
    score 0 as hypotheses and contribute nothing as references.
  """
  max_order = _check_max_order(max_order)
  tokens = [t.split() for t in check_texts("texts", texts)]
  if len(tokens) < 2:
    return 0.0
  counts = [_ngram_counts(t, max_order) for t in tokens]
  # n-gram -> [largest count, index of its text, second largest count].
  best = [{} for _ in range(max_order)]
  for i, text_counts in enumerate(counts):
    for n in range(max_order):
      for g, count in text_counts[n].items():
        top = best[n].setdefault(g, [0, -1, 0])
        if count > top[0]:
          top[:] = [count, i, top[0]]
        elif count > top[2]:
          top[2] = count
  lengths = Counter(map(len, tokens))
  scores = []
  for i, hyp_counts in enumerate(counts):
    matches = []
    for n in range(max_order):
      matched = 0
      for g, count in hyp_counts[n].items():
        top, owner, second = best[n][g]
        matched += min(count, second if owner == i else top)
      matches.append(matched)
    hyp_len = len(tokens[i])
    lengths[hyp_len] -= 1
    ref_len = _closest_length(lengths, hyp_len)
    lengths[hyp_len] += 1
    scores.append(_score(matches, hyp_counts, hyp_len, ref_len))
  return math.fsum(scores) / len(scores)
