"""How an NLI model's pair scores become one reward per (source, summary).

Three granularities (`EntailmentConfig.granularity`), with their cost in NLI
pairs for a summary of S sentences and a source cut into C chunks:

* "document" (1 pair): the whole source against the whole summary; a
  source longer than the model's input is truncated.
* "sentence" (S pairs): every summary sentence against the whole
  (truncated) source; the reward is the mean over sentences.
* "summac" (S * C pairs): SummaC-ZS (Laban et al. 2022, "SummaC:
  Re-Visiting NLI-based Models for Inconsistency Detection in
  Summarization", https://arxiv.org/abs/2111.09525, Sec. 3.1): every summary
  sentence against every source chunk, the max over chunks, then the mean
  over sentences:

      reward = (1 / S) sum_s max_c score(chunk_c, sentence_s)

  Chunks hold `chunk_sentences` whole source sentences each, or as many
  whole sentences as fit in `chunk_tokens` tokens. Nothing is truncated
  away, so this is the mode for sources longer than the model's input.

The pair score is P(entailment) ("entailment", in [0, 1]), or
P(entailment) - P(contradiction) ("entailment_minus_contradiction", in
[-1, 1], the score SummaC-ZS reports by default). The first is our default
because it keeps every granularity's reward in [0, 1], like the
"document" reward of earlier versions.
"""

from collections.abc import Callable, Sequence

import numpy as np

from gkdrl.reward_models import sentences as sentences_lib

GRANULARITIES = ("document", "sentence", "summac")
NLI_SCORES = ("entailment", "entailment_minus_contradiction")


def chunk_by_sentences(text: str, per_chunk: int) -> list[str]:
  """`text`'s sentences in groups of `per_chunk`; an empty text is [""]."""
  found = sentences_lib.split_sentences(text)
  if not found:
    return [""]
  return [" ".join(found[i:i + per_chunk])
          for i in range(0, len(found), per_chunk)]


def pair_plan(
    sources: Sequence[str], completions: Sequence[str], granularity: str,
    chunker: Callable[[str], list[str]],
) -> tuple[list[str], list[str], list[tuple[int, int]]]:
  """The NLI pairs a batch needs and how to fold their scores back.

  Args:
    sources: B source documents.
    completions: B non-empty summaries.
    granularity: one of `GRANULARITIES`.
    chunker: cuts a source into chunks ("summac" only).

  Returns:
    `(premises, hypotheses, shapes)`: the pairs, row b's block of
    `chunks * sentences` pairs laid out chunk-major, and `shapes[b] =
    (chunks, sentences)`.
  """
  premises, hypotheses, shapes = [], [], []
  for source, completion in zip(sources, completions):
    if granularity == "document":
      chunks, sentences = [source], [completion]
    else:
      sentences = sentences_lib.split_sentences(completion) or [completion]
      chunks = chunker(source) if granularity == "summac" else [source]
    shapes.append((len(chunks), len(sentences)))
    for chunk in chunks:
      premises += [chunk] * len(sentences)
      hypotheses += sentences
  return premises, hypotheses, shapes


def fold_scores(
    pair_scores: np.ndarray, shapes: Sequence[tuple[int, int]]
) -> np.ndarray:
  """Max over chunks, mean over sentences, per row.

  Args:
    pair_scores: [sum_b chunks_b * sentences_b] scores in `pair_plan` order.
    shapes: `(chunks, sentences)` per row.

  Returns:
    [B] float32 rewards.
  """
  total = sum(c * s for c, s in shapes)
  if pair_scores.shape != (total,):
    raise ValueError(f"pair_scores has shape {pair_scores.shape}; the plan "
                     f"has {total} pairs.")
  out, start = [], 0
  for chunks, sentences in shapes:
    block = pair_scores[start:start + chunks * sentences]
    start += chunks * sentences
    # [chunks, sentences] -> best chunk per sentence -> mean over sentences.
    out.append(block.reshape(chunks, sentences).max(axis=0).mean())
  return np.asarray(out, np.float32)


def document_scores(
    pair_score: Callable[[list[str], list[str]], np.ndarray],
    sources: Sequence[str], completions: Sequence[str], *, granularity: str,
    chunker: Callable[[str], list[str]],
) -> np.ndarray:
  """Rewards of B (source, summary) rows at one granularity.

  Args:
    pair_score: maps N premises and N hypotheses to [N] scores (one batched
      NLI call for the whole plan).
    sources: B source documents.
    completions: B non-empty summaries.
    granularity: one of `GRANULARITIES`.
    chunker: cuts a source into chunks ("summac" only).

  Returns:
    [B] float32 rewards.
  """
  premises, hypotheses, shapes = pair_plan(
      sources, completions, granularity, chunker)
  scores = np.asarray(pair_score(premises, hypotheses), np.float32)
  return fold_scores(scores, shapes)
