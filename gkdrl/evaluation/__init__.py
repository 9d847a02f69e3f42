"""gkdrl.evaluation: how good, how faithful and how diverse a model's text is.

  evaluate       model + task -> per decoding mode: reward, task rewards,
                 ROUGE, reverse KL to a teacher, Self-BLEU, length.
  evaluate_with_samples   evaluate, plus a few completions per mode.
  score_texts    task rewards, fact counts and ROUGE of given texts.
  bleu           smoothed sentence BLEU (Chen & Cherry method 1).
  self_bleu      Self-BLEU of a set of texts (Texygen).
  rouge_scores   mean ROUGE-1/2/L F1 (rouge-score tokenizer, stemmed).
  format_table   plain-text table of named results.
"""

from gkdrl.evaluation.bleu_score import bleu
from gkdrl.evaluation.bleu_score import self_bleu
from gkdrl.evaluation.evaluator import DEFAULT_MODES
from gkdrl.evaluation.evaluator import evaluate
from gkdrl.evaluation.evaluator import evaluate_with_samples
from gkdrl.evaluation.evaluator import FACT_COUNT_KEYS
from gkdrl.evaluation.evaluator import score_texts
from gkdrl.evaluation.rouge import ROUGE_KEYS
from gkdrl.evaluation.rouge import rouge_scores
from gkdrl.evaluation.rouge import WhitespaceTokenizer
from gkdrl.evaluation.samples import SAMPLE_KEYS
from gkdrl.evaluation.table import format_table

__all__ = [
    "DEFAULT_MODES", "FACT_COUNT_KEYS", "ROUGE_KEYS", "SAMPLE_KEYS",
    "WhitespaceTokenizer", "bleu", "evaluate", "evaluate_with_samples",
    "format_table", "rouge_scores", "score_texts",
    "self_bleu",
]
