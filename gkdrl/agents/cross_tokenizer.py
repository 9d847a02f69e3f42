"""Distillation from a teacher whose tokenizer is not the student's.

The student's text (dataset targets, or its own samples on-policy) is
decoded on the host and encoded again with the teacher's tokenizer; the
teacher reads its own tokens, and each student completion position is
paired with a teacher position by character offsets
(`gkdrl.tasks.token_alignment.align_offsets`). The pairing travels in the
batch as padded arrays (`types.TeacherTokens`: `index [B, T]`,
`exact [B, T]`), so the update stays one jitted function; the loss is
`gkdrl.losses.cross_tokenizer_loss`.

A token's span is the piece of the decoded text it adds: the length of
`decode(ids[:i + 1])` past that of `decode(ids[:i])`. Both tokenizers are
measured this way, so a leading space belongs to the token that decodes it
on either side, and the teacher's EOS (appended when the student's
completion ends with one) pairs with the student's, both empty spans at the
end of the text.

This is host work per batch: two decodes per token (a prefix each) and one
encode per row; multi-host runs are not supported.
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from gkdrl import losses
from gkdrl import types
from gkdrl.agents import base
from gkdrl.tasks import token_alignment

# Teacher prompt and completion lengths are rounded up to the next of
# 16, 24, 32, 48, 64, 96, ... (at most 1.5 times the length), so the update
# compiles for a handful of shapes, not one per batch.
LENGTH_BUCKET = 16


def _decode(tokenizer, ids: Sequence[int]) -> str:
  return tokenizer.decode(list(ids), skip_special_tokens=True,
                          clean_up_tokenization_spaces=False)


def token_spans(tokenizer, ids: Sequence[int]
                ) -> tuple[str, list[tuple[int, int]]]:
  """The decoded text of `ids` and each token's character span in it.

  Args:
    tokenizer: a `transformers` tokenizer.
    ids: the token ids of one text.

  Returns:
    (text, spans): `decode(ids)` and one (start, end) per token, increasing
    (a special token, which decodes to nothing, spans no characters).
  """
  ids = [int(i) for i in ids]
  ends = [len(_decode(tokenizer, ids[:i])) for i in range(1, len(ids) + 1)]
  ends = np.maximum.accumulate(np.asarray([0] + ends, np.int64))
  text = _decode(tokenizer, ids)
  ends = np.minimum(ends, len(text))
  return text, [(int(a), int(b)) for a, b in zip(ends[:-1], ends[1:])]


def shared_ids(student_tokenizer, teacher_tokenizer
               ) -> tuple[np.ndarray, np.ndarray]:
  """(student ids, teacher ids) `[S]` of the tokens both tokenizers hold.

  Token strings that both vocabularies hold, plus the pair of EOS tokens
  (spelt differently by most pairs, but both mean "the text ends here").
  Each id appears once on each side.
  """
  s_ids, t_ids = token_alignment.shared_vocabulary(
      student_tokenizer.get_vocab(), teacher_tokenizer.get_vocab())
  s_eos = student_tokenizer.eos_token_id
  t_eos = teacher_tokenizer.eos_token_id
  if (s_eos is not None and t_eos is not None and s_eos not in s_ids
      and t_eos not in t_ids):
    s_ids = np.append(s_ids, np.int32(s_eos))
    t_ids = np.append(t_ids, np.int32(t_eos))
  return s_ids.astype(np.int32), t_ids.astype(np.int32)


def bucket_length(length: int) -> int:
  """The padded length of `length` tokens: LENGTH_BUCKET * 2^k, or 1.5
  times that, the smallest not below `length`."""
  size = LENGTH_BUCKET
  while size < length:
    if size * 3 // 2 >= length:
      return size * 3 // 2
    size *= 2
  return size


def _pad_id(tokenizer) -> int:
  for pad in (tokenizer.pad_token_id, tokenizer.eos_token_id):
    if pad is not None:
      return int(pad)
  return 0


def _teacher_row(prompt_ids, completion_ids, student_tokenizer,
                 teacher_tokenizer, student_eos: set[int]):
  """One row: the teacher's prompt and completion ids, and the pairing."""
  prompt_text = _decode(student_tokenizer, prompt_ids)
  t_prompt = list(teacher_tokenizer.encode(prompt_text,
                                           add_special_tokens=True))
  if not t_prompt:  # the teacher needs a position to predict the first token
    t_prompt = [_pad_id(teacher_tokenizer)]
  text, s_spans = token_spans(student_tokenizer, completion_ids)
  t_completion = list(teacher_tokenizer.encode(text,
                                               add_special_tokens=False))
  ends = (len(completion_ids) and int(completion_ids[-1]) in student_eos
          and teacher_tokenizer.eos_token_id is not None)
  if ends:
    t_completion.append(int(teacher_tokenizer.eos_token_id))
  if not t_completion:
    return t_prompt, t_completion, np.zeros(len(s_spans), np.int32), \
        np.zeros(len(s_spans), bool)
  _, t_spans = token_spans(teacher_tokenizer, t_completion)
  index, exact = token_alignment.align_offsets(s_spans, t_spans)
  return t_prompt, t_completion, index, exact


def retokenize(batch: types.Batch, student_tokenizer, teacher_tokenizer, *,
               eos_token_id) -> types.Batch:
  """The batch with its text in the teacher's tokens (`teacher_tokens`).

  Args:
    batch: a `Batch` of student prompts `[B, P]` and completions `[B, T]`.
    student_tokenizer: the student's (and the task's) tokenizer.
    teacher_tokenizer: the teacher's.
    eos_token_id: the student's EOS id or ids (a completion ending with
      one gets the teacher's EOS too).

  Returns:
    `batch` with `teacher_tokens`: prompts `[B, P_t]` (left-padded),
    completions `[B, T_t]` (right-padded), P_t and T_t rounded up by
    `bucket_length`, and `index`/`exact` `[B, T]` (0/False at
    the student's padding).
  """
  eos = {int(e) for e in np.atleast_1d(np.asarray(eos_token_id))}
  prompts, prompt_mask = (np.asarray(x) for x in (batch.prompt_tokens,
                                                  batch.prompt_mask))
  tokens, mask = (np.asarray(x) for x in (batch.completion_tokens,
                                          batch.completion_mask))
  rows = [_teacher_row(p[m.astype(bool)], c[cm.astype(bool)],
                       student_tokenizer, teacher_tokenizer, eos)
          for p, m, c, cm in zip(prompts, prompt_mask, tokens, mask)]
  num, length = tokens.shape
  p_len = bucket_length(max(len(r[0]) for r in rows))
  t_len = bucket_length(max(len(r[1]) for r in rows))
  pad = _pad_id(teacher_tokenizer)
  t_prompts = np.full((num, p_len), pad, np.int32)
  t_prompt_mask = np.zeros((num, p_len), bool)
  t_tokens = np.full((num, t_len), pad, np.int32)
  t_mask = np.zeros((num, t_len), bool)
  index = np.zeros((num, length), np.int32)
  exact = np.zeros((num, length), bool)
  for b, (t_prompt, t_completion, row_index, row_exact) in enumerate(rows):
    t_prompts[b, p_len - len(t_prompt):] = t_prompt
    t_prompt_mask[b, p_len - len(t_prompt):] = True
    t_tokens[b, :len(t_completion)] = t_completion
    t_mask[b, :len(t_completion)] = True
    valid = np.flatnonzero(mask[b])
    index[b, valid] = row_index
    exact[b, valid] = row_exact
  return batch._replace(teacher_tokens=types.TeacherTokens(
      prompt_tokens=jnp.asarray(t_prompts), prompt_mask=jnp.asarray(
          t_prompt_mask), completion_tokens=jnp.asarray(t_tokens),
      completion_mask=jnp.asarray(t_mask), index=jnp.asarray(index),
      exact=jnp.asarray(exact)))


def aligned_teacher_logits(teacher_logits: jax.Array,
                           index: jax.Array) -> jax.Array:
  """The teacher's logits `[B, T_t, V_t]` at the student positions: `[B, T,
  V_t]`, row b position t taken from teacher position `index[b, t]`."""
  return jnp.take_along_axis(teacher_logits, index[..., None], axis=1)


def wrap_act(act, parts):
  """`act`, followed by `retokenize` of the batch it builds (for
  `registry.Parts` with a `teacher_tokenizer`)."""

  def act_and_retokenize(state, task_batch, key, **kwargs):
    batch, info = act(state, task_batch, key, **kwargs)
    return retokenize(
        batch, parts.tokenizer, parts.teacher_tokenizer,
        eos_token_id=parts.eos_token_id), info

  return act_and_retokenize


def make_loss(config, parts):
  """The loss of a `DistillationConfig` with a teacher with its own
  tokenizer (`registry.Parts.teacher_tokenizer`): the teacher reads the
  batch's `teacher_tokens`, its logits are gathered at the student's
  positions, and `gkdrl.losses.cross_tokenizer_loss` compares them.

  Returns:
    `loss_fn(params, state, batch, teacher_params, key) -> (loss,
    metrics)`.
  """
  student_ids, teacher_ids = shared_ids(
      parts.tokenizer, parts.teacher_tokenizer)  # [S] each

  def loss_fn(params, state, batch, teacher_params, key):
    del state, key
    view = batch.teacher_tokens
    teacher_batch = types.Batch(
        prompt_tokens=view.prompt_tokens, prompt_mask=view.prompt_mask,
        completion_tokens=view.completion_tokens,
        completion_mask=view.completion_mask)
    teacher_logits = base.teacher_logits(
        parts.teacher, teacher_params, teacher_batch,
        config.compute_dtype)  # [B, T_t, V_t]
    return losses.cross_tokenizer_loss(
        base.student_logits(parts.student, params, batch, config),
        aligned_teacher_logits(teacher_logits, view.index),
        view.exact, batch.completion_mask, student_ids, teacher_ids,
        mode=config.cross_tokenizer, divergence=config.divergence,
        reduction=config.reduction, **config.divergence_kwargs())

  return loss_fn
