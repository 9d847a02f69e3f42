r"""gkdrl's BLEU and Self-BLEU against sacrebleu's, on the same texts.

    python -m benchmarks.bleu

sacrebleu is configured to give the same numbers (floor smoothing 0.1,
whitespace tokens, no effective order) on hypotheses of 4 or more words;
shorter ones differ (see tests/evaluation/bleu_score_test.py). Self-BLEU with
sacrebleu scores each text against all the others, as Texygen does; ours
keeps the best and second-best count of every n-gram instead.
"""

import logging
import random
import statistics
import time

import sacrebleu

from gkdrl.evaluation import bleu_score

WORDS = ("the a cat dog sat on mat red blue big small ran fast slow home "
         "and with of to in").split()


def _text(rng, low, high):
  return " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high)))


def _best_of(fn, repeats=5):
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return min(times)


def _sacrebleu_self_bleu(metric, texts):
  return statistics.fmean(
      metric.sentence_score(h, texts[:i] + texts[i + 1:]).score
      for i, h in enumerate(texts))


def main():
  logging.getLogger("sacrebleu").setLevel(logging.ERROR)
  metric = sacrebleu.metrics.BLEU(smooth_method="floor", smooth_value=0.1,
                                  tokenize="none", effective_order=False)
  rng = random.Random(0)
  pairs = [(_text(rng, 4, 30), [_text(rng, 4, 30) for _ in range(3)])
           for _ in range(500)]
  ours = _best_of(lambda: [bleu_score.bleu(h, r) for h, r in pairs])
  theirs = _best_of(lambda: [metric.sentence_score(h, r) for h, r in pairs])
  print(f"sentence BLEU, 500 hypotheses x 3 references: gkdrl "
        f"{ours * 1e3:.1f} ms, sacrebleu {theirs * 1e3:.1f} ms "
        f"({theirs / ours:.1f}x)")
  for n in (4, 32, 128):
    texts = [_text(rng, 4, 30) for _ in range(n)]
    assert abs(bleu_score.self_bleu(texts)
               - _sacrebleu_self_bleu(metric, texts)) < 1e-6
    ours = _best_of(lambda: bleu_score.self_bleu(texts))  # pylint: disable=cell-var-from-loop
    theirs = _best_of(lambda: _sacrebleu_self_bleu(metric, texts), 3)  # pylint: disable=cell-var-from-loop
    print(f"Self-BLEU of {n:3d} texts: gkdrl {ours * 1e3:8.2f} ms, "
          f"sacrebleu {theirs * 1e3:8.2f} ms ({theirs / ours:.1f}x)")


if __name__ == "__main__":
  main()
