"""Aligning two tokenizations of one text by character offsets.

For distillation across tokenizers each student position needs a teacher
position to compare with. `align_offsets` pairs student token i, spanning
characters [a, b), with the teacher token spanning exactly [a, b) when
there is one ("exact": both models predict the same string from the same
text prefix, so their distributions over the tokens both vocabularies hold
are comparable), else with the last teacher token starting at or before a
(approximate: the teacher predicts a different piece of the text, from a
prefix that may be shorter). `shared_vocabulary` lists the tokens whose
strings both vocabularies hold.
"""

from collections.abc import Sequence

import numpy as np


def align_offsets(student_offsets: Sequence[tuple[int, int]],
                  teacher_offsets: Sequence[tuple[int, int]]
                  ) -> tuple[np.ndarray, np.ndarray]:
  """(teacher index, exact) for each student token.

  Args:
    student_offsets: T_s character spans (start, end) of the student's
      tokens of a text (a tokenizer's `offset_mapping`), increasing.
    teacher_offsets: T_t spans of the teacher's tokens of the same text.

  Returns:
    `teacher_index [T_s]` int32 (a position of the teacher's tokens) and
    `exact [T_s]` bool (the two spans are the same).
  """
  if not teacher_offsets:
    raise ValueError("teacher_offsets must hold at least one token span.")
  spans = {tuple(span): j for j, span in enumerate(teacher_offsets)}
  starts = np.asarray([s for s, _ in teacher_offsets])
  index = np.zeros(len(student_offsets), np.int32)
  exact = np.zeros(len(student_offsets), bool)
  for i, span in enumerate(student_offsets):
    j = spans.get(tuple(span))
    exact[i] = j is not None
    if j is None:
      j = max(int(np.searchsorted(starts, span[0], side="right")) - 1, 0)
    index[i] = j
  return index, exact


def shared_vocabulary(student_vocab: dict[str, int],
                      teacher_vocab: dict[str, int]
                      ) -> tuple[np.ndarray, np.ndarray]:
  """(student ids, teacher ids) `[S]` int32 of the token strings in both.

  Tokens are matched by their vocabulary strings (`get_vocab()`), so two
  tokenizers that spell one piece differently (a "Ġ" against a "▁" word
  prefix) share nothing for it.
  """
  both = sorted(set(student_vocab) & set(teacher_vocab))
  return (np.asarray([student_vocab[t] for t in both], np.int32),
          np.asarray([teacher_vocab[t] for t in both], np.int32))
