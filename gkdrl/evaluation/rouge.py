"""ROUGE-1, ROUGE-2 and ROUGE-L F-measures, the standard way.

Scores come from Google's `rouge-score` package (Lin 2004,
https://aclanthology.org/W04-1013) with its default tokenizer and the Porter
stemmer, as in the GKD paper and the summarisation literature, and as the
`make_rouge_reward` reward model computes them: so the ROUGE a run reports
and the ROUGE a run optimises are the same number. The default tokenizer
lower-cases, replaces every character outside [a-z0-9] by a space and drops
what is left empty: punctuation ("." or "####") never counts, and "4,000"
becomes "4 000".
"""

from collections.abc import Sequence
import math

from gkdrl.evaluation import bleu_score

ROUGE_KEYS = ("rouge1", "rouge2", "rougeL")


class WhitespaceTokenizer:
  """A rouge-score tokenizer: lower-cased whitespace-separated words.

  Not what `rouge_scores` uses (that is rouge-score's default tokenizer);
  kept for callers who want ROUGE on whitespace tokens, punctuation
  included: `rouge_scorer.RougeScorer(keys, tokenizer=WhitespaceTokenizer())`.
  """

  def tokenize(self, text: str) -> list[str]:
    return text.lower().split()


def rouge_scores(predictions: Sequence[str],
                 references: Sequence[str]) -> dict[str, float]:
  """Mean ROUGE F-measures of predictions against their references.

  Args:
    predictions: N predicted texts.
    references: N reference texts, one per prediction.

  Returns:
    "rouge1", "rouge2", "rougeL" -> mean F1 over the N pairs, times 100, in
    [0, 100], with rouge-score's default tokenizer and the Porter stemmer
    (see the module docstring). A prediction or reference with no token
    left (empty, or punctuation only) scores 0 for its pair.

  Raises:
    ValueError: if the inputs are empty, differ in length or hold non-str.
  """
  from rouge_score import rouge_scorer  # pylint: disable=g-import-not-at-top

  predictions = bleu_score.check_texts("predictions", predictions)
  references = bleu_score.check_texts("references", references)
  if not predictions or len(predictions) != len(references):
    raise ValueError(
        "predictions and references must have equal, non-zero lengths, got "
        f"{len(predictions)} and {len(references)}")
  scorer = rouge_scorer.RougeScorer(list(ROUGE_KEYS), use_stemmer=True)
  totals = {key: [] for key in ROUGE_KEYS}
  for prediction, reference in zip(predictions, references):
    scores = scorer.score(reference, prediction)  # (target, prediction)
    for key in ROUGE_KEYS:
      totals[key].append(scores[key].fmeasure)
  return {key: 100.0 * math.fsum(values) / len(values)
          for key, values in totals.items()}
