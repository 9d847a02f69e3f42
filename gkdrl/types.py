"""Shape glossary and records shared across gkdrl.

Every tensor in gkdrl is batch-major and uses these letters in its shape
comments:

    B  batch size (rows; several samples of one prompt are consecutive rows)
    P  prompt length (left-padded: real prompt tokens sit at the right end)
    T  completion length (right-padded: generated tokens start at index 0)
    L  full sequence length, L = P + T
    V  vocabulary size
    D  model width (hidden size)

Position-wise divergences take logits `[..., V]` and return values `[...]`.
Sequence maths takes values `[B, T]` with a `[B, T]` mask (1 = valid token).
If a `lax.scan` produces time-major arrays they are transposed once, at the
boundary, never inside a loss.
"""

from typing import NamedTuple

import jax

Array = jax.Array
PRNGKey = jax.Array
Metrics = dict[str, Array]


class Samples(NamedTuple):
  """Completions drawn by the sampler for a batch of prompts."""

  tokens: Array  # [B, T] int32 sampled tokens (pad after the end)
  logp_a: Array  # [B, T] float32 log pi(token) at temperature 1
  mask: Array  # [B, T] bool, generated tokens up to and including EOS
  lengths: Array  # [B] int32 number of valid tokens in each row


class TeacherTokens(NamedTuple):
  """A batch's text in the teacher's tokens, for a teacher whose tokenizer
  is not the student's (`gkdrl.agents.cross_tokenizer`).

  P_t and T_t are the teacher's prompt and completion lengths (padded to
  buckets). `index` and `exact` map each student completion position to
  the teacher completion position aligned with it by character offsets.
  """

  prompt_tokens: Array  # [B, P_t] int32, left-padded
  prompt_mask: Array  # [B, P_t] bool
  completion_tokens: Array  # [B, T_t] int32, right-padded
  completion_mask: Array  # [B, T_t] bool
  index: Array  # [B, T] int32 teacher completion position of each
  exact: Array  # [B, T] bool, both tokens span the same characters


class Batch(NamedTuple):
  """A training batch: prompts, completions and everything scored on them.

  This is the one record that carries every per-token quantity through a
  step (sampler -> scoring -> learner). Fields that a given agent does not
  need are None.
  """

  prompt_tokens: Array  # [B, P] int32, left-padded
  prompt_mask: Array  # [B, P] bool
  completion_tokens: Array  # [B, T] int32, right-padded
  completion_mask: Array  # [B, T] bool
  behaviour_logp_a: Array | None = None  # [B, T] log-prob under the sampler
  rewards: Array | None = None  # [B] float32 sequence-level rewards
  # [B, T, D] teacher hidden states predicting each completion token, when
  # computed ahead of the update (overlapping host rewards).
  teacher_hidden: Array | None = None
  # [B, T, K] the teacher's top-k token ids (int32) and log-probabilities
  # (float32) per completion position, read from an offline teacher cache.
  teacher_top_ids: Array | None = None
  teacher_top_logp: Array | None = None
  # [B] float32 sequence advantages r - b, computed by the update on the
  # whole batch before it is split into micro-batches.
  advantages: Array | None = None
  # The same text in the teacher's tokens, when its tokenizer differs.
  teacher_tokens: TeacherTokens | None = None
