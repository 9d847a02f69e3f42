"""BLEU and Self-BLEU against NLTK's sentence_bleu (method-1 smoothing),
and where they meet sacrebleu's sentence BLEU."""

import logging
import random

# NLTK is installed with rouge-score (a gkdrl dependency); only tests use it.
from nltk.translate import bleu_score
import pytest
import sacrebleu

from gkdrl import evaluation
from gkdrl.evaluation.bleu_score import EPSILON

WORDS = "the cat dog sat on a mat .".split()


def _nltk_bleu(hypothesis, references, max_order=4):
  """NLTK's smoothed sentence BLEU, times 100."""
  return 100.0 * bleu_score.sentence_bleu(
      [r.split() for r in references], hypothesis.split(),
      weights=(1.0 / max_order,) * max_order,
      smoothing_function=bleu_score.SmoothingFunction().method1)


def _nltk_self_bleu(texts, max_order=4):
  return sum(
      _nltk_bleu(h, texts[:i] + texts[i + 1:], max_order)
      for i, h in enumerate(texts)) / len(texts)


def _random_text(rng, max_words=12):
  return " ".join(rng.choices(WORDS, k=rng.randint(0, max_words)))


CASES = [
    # Papineni-style: several references of different lengths.
    ("the cat sat on the mat .",
     ["the cat sat on a mat .", "a cat sat on the mat", "the dog sat ."]),
    # Clipping: a repeated word counts at most as often as in a reference.
    ("the the the the the the", ["the cat sat on the mat"]),
    # Shorter than 4 words: orders without n-grams are smoothed.
    ("the cat", ["the cat sat", "a cat"]),
    # No unigram in common: 0.
    ("dog dog", ["the cat sat on the mat"]),
    # Longer than every reference: no brevity penalty.
    ("the cat sat on the mat and the dog sat on a mat too",
     ["the cat sat on the mat"]),
    # Two references equally close in length: the shorter counts.
    ("a b c d e", ["a b c d", "a b c d e f"]),
    ("", ["the cat"]),
    ("the cat sat on the mat", ["", "the cat sat"]),
]


@pytest.mark.parametrize("hypothesis,references", CASES)
@pytest.mark.parametrize("max_order", [1, 2, 4])
def test_bleu_matches_nltk_on_hand_cases(hypothesis, references, max_order):
  assert evaluation.bleu(hypothesis, references, max_order=max_order) == (
      pytest.approx(_nltk_bleu(hypothesis, references, max_order), abs=1e-6))


def test_bleu_matches_nltk_on_random_texts():
  rng = random.Random(0)
  for max_order in (1, 3, 4, 5):
    for _ in range(100):
      hypothesis = _random_text(rng)
      references = [_random_text(rng) for _ in range(rng.randint(1, 4))]
      assert evaluation.bleu(hypothesis, references, max_order=max_order) == (
          pytest.approx(_nltk_bleu(hypothesis, references, max_order),
                        abs=1e-6)), (hypothesis, references)


def test_self_bleu_matches_nltk_leave_one_out():
  rng = random.Random(1)
  for trial in range(60):
    texts = [_random_text(rng) for _ in range(rng.randint(2, 7))]
    if trial % 3 == 0:  # duplicates exercise the best/second-best counts
      texts.append(texts[0])
    assert evaluation.self_bleu(texts) == pytest.approx(
        _nltk_self_bleu(texts), abs=1e-6), texts


def test_self_bleu_is_the_mean_of_leave_one_out_bleu():
  texts = ["the cat sat on the mat", "the dog sat on the mat",
           "a cat sat on a mat .", "the cat sat"]
  expected = sum(evaluation.bleu(h, texts[:i] + texts[i + 1:], max_order=3)
                 for i, h in enumerate(texts)) / len(texts)
  assert evaluation.self_bleu(texts, max_order=3) == pytest.approx(expected)


def test_self_bleu_orders_diversity():
  same = ["the cat sat on the mat ."] * 2 + ["the cat sat on a mat ."]
  varied = ["the cat sat on the mat .", "a dog sat .", "mat on cat the"]
  assert evaluation.self_bleu(same) > evaluation.self_bleu(varied)


@pytest.mark.parametrize("copies", [2, 5])
def test_identical_texts_score_100(copies):
  assert evaluation.self_bleu(["the cat sat on the mat ."] * copies) == (
      pytest.approx(100.0))
  assert evaluation.bleu("the cat sat on", ["the cat sat on"]) == (
      pytest.approx(100.0))


def test_identical_texts_shorter_than_max_order_match_nltk():
  # Orders 3 and 4 have no n-gram and get epsilon: NLTK's value, not 100.
  assert evaluation.self_bleu(["the cat"] * 3) == pytest.approx(
      _nltk_self_bleu(["the cat"] * 3), abs=1e-6)
  assert evaluation.self_bleu(["the cat"] * 3) < 100.0
  assert evaluation.self_bleu(["the cat"] * 3, max_order=2) == (
      pytest.approx(100.0))


@pytest.mark.parametrize("texts", [[], ["the cat sat on the mat"]])
def test_self_bleu_of_fewer_than_two_texts_is_zero(texts):
  assert evaluation.self_bleu(texts) == 0.0


def test_empty_texts():
  assert evaluation.bleu("", ["the cat"]) == 0.0
  assert evaluation.bleu("the cat", [""]) == 0.0
  assert evaluation.self_bleu(["", ""]) == 0.0
  # An empty text scores 0 as hypothesis and matches nothing as reference.
  texts = ["", "the cat sat on the mat", "the cat sat on the mat"]
  assert evaluation.self_bleu(texts) == pytest.approx(
      _nltk_self_bleu(texts), abs=1e-6)
  assert evaluation.self_bleu(texts) == pytest.approx(200.0 / 3)


def test_whitespace_tokens_are_case_sensitive():
  assert evaluation.bleu("The cat", ["the cat"], max_order=1) == (
      pytest.approx(50.0))
  assert evaluation.bleu(" the\tcat\n", ["the  cat"], max_order=2) == (
      pytest.approx(100.0))


@pytest.mark.parametrize("call,match", [
    (lambda: evaluation.bleu("a", []), "references"),
    (lambda: evaluation.bleu("a", "a b"), "references"),
    (lambda: evaluation.bleu("a", ["a"], max_order=0), "max_order"),
    (lambda: evaluation.bleu(["a"], ["a"]), "hypothesis"),
    (lambda: evaluation.self_bleu("a b"), "texts"),
    (lambda: evaluation.self_bleu(["a", 3]), r"texts\[1\]"),
    (lambda: evaluation.self_bleu(["a", "b"], max_order=True), "max_order"),
])
def test_bad_inputs_raise(call, match):
  with pytest.raises(ValueError, match=match):
    call()


def test_scores_stay_in_range():
  rng = random.Random(2)
  for _ in range(50):
    texts = [_random_text(rng) for _ in range(4)]
    assert 0.0 <= evaluation.self_bleu(texts) <= 100.0 + 1e-9
    assert 0.0 <= evaluation.bleu(texts[0], texts[1:]) <= 100.0 + 1e-9


def _sacrebleu(effective_order=False):
  """sacrebleu's sentence BLEU set up like ours: floor 0.1, whitespace."""
  logging.getLogger("sacrebleu").setLevel(logging.ERROR)
  return sacrebleu.metrics.BLEU(smooth_method="floor", smooth_value=0.1,
                                tokenize="none",
                                effective_order=effective_order)


def _pairs(min_words, max_words, count=300, seed=0):
  rng = random.Random(seed)
  text = lambda: " ".join(rng.choices(WORDS, k=rng.randint(min_words,
                                                          max_words)))
  return [(text(), [text() for _ in range(rng.randint(1, 3))])
          for _ in range(count)]


def test_bleu_equals_sacrebleu_floor_smoothing_from_four_words():
  metric = _sacrebleu()
  pairs = _pairs(4, 20) + [("", ["the cat sat on a mat"]),
                           ("", [""]), ("the cat sat on", [""])]
  pairs += [(h, r + [""]) for h, r in _pairs(4, 8, count=50, seed=1)]
  for hypothesis, references in pairs:
    assert evaluation.bleu(hypothesis, references) == pytest.approx(
        metric.sentence_score(hypothesis, references).score, abs=1e-9), (
            hypothesis, references)


def test_bleu_of_short_hypotheses_differs_from_sacrebleu_by_the_smoothing():
  # Below 4 words, orders with no n-gram at all get precision 0.1 here
  # (NLTK and Texygen), while sacrebleu stops at the last order with
  # n-grams: it averages k < 4 orders (effective order) or scores 0.
  plain, effective = _sacrebleu(), _sacrebleu(effective_order=True)
  checked = 0
  for hypothesis, references in _pairs(1, 3, count=300, seed=2):
    ours = evaluation.bleu(hypothesis, references)
    assert plain.sentence_score(hypothesis, references).score < 1e-6
    score = effective.sentence_score(hypothesis, references)
    if score.score == 0:  # no unigram in common: 0 everywhere
      assert ours == 0
      continue
    k = len(hypothesis.split())
    geometric = score.score / 100 / score.bp  # mean over k orders, in [0, 1]
    expected = 100 * score.bp * (geometric**k * EPSILON**(4 - k))**0.25
    assert ours == pytest.approx(expected, rel=1e-9), (hypothesis, references)
    checked += 1
  assert checked > 100
