"""Sentence splitting and document chunking for sentence-level NLI scoring.

The splitter is deliberately simple (no model, no NLTK data download): a
sentence ends at ".", "!" or "?" followed by whitespace, or at a newline.
"""

from collections.abc import Callable, Sequence
import re

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


def split_sentences(text: str) -> list[str]:
  """Sentences of `text`: split after . ! ? + whitespace and at newlines."""
  return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def chunk_document(
    text: str, count_tokens: Callable[[Sequence[str]], list[int]],
    chunk_tokens: int,
) -> list[str]:
  """Greedily packs whole sentences into chunks of <= `chunk_tokens` tokens.

  A sentence longer than `chunk_tokens` is a chunk of its own (the tokenizer
  truncates it later). An empty text is one empty chunk.

  Args:
    text: the source document.
    count_tokens: maps sentences to their token counts.
    chunk_tokens: the chunk budget.

  Returns:
    The chunks, sentences joined by single spaces.
  """
  sentences = split_sentences(text)
  if not sentences:
    return [""]
  chunks, current, used = [], [], 0
  for sentence, n in zip(sentences, count_tokens(sentences)):
    if current and used + n > chunk_tokens:
      chunks.append(" ".join(current))
      current, used = [], 0
    current.append(sentence)
    used += n
  chunks.append(" ".join(current))
  return chunks
