"""One real vocabulary for a teacher and a student padded differently.

Models of one family share a tokenizer but pad their embedding matrices to
different sizes (Qwen2.5-0.5B has 151,936 rows, Qwen2.5-7B 152,064, for a
tokenizer of 151,665 tokens). The ids below the tokenizer's size are the
real vocabulary; the rows above it are padding, never a token of the data.
`restrict_vocabulary` gives a view of a model whose logits cover the real
vocabulary only, so every divergence, log-probability and sample of an
agent is over the same V ids for both models, and a padding id is never
sampled.
"""

import functools

from gkdrl import validation
from gkdrl.networks import tokenizer

# How two tokenizers differ, in words, or None (`networks.tokenizer`).
tokenizer_difference = tokenizer.tokenizer_difference


def restrict_vocabulary(model, vocab_size: int):
  """A view of `model` whose logits cover ids `[0, vocab_size)` only.

  The parameters are unchanged (the embedding keeps its padding rows); the
  unembedding `[D, vocab_size]` and every logits output (`apply`,
  `prefill`, `decode`) are sliced to the real vocabulary, so a sampler
  cannot draw a padding id and a softmax gives it no mass. The same
  `model` when `vocab_size` is its own.

  Args:
    model: a `gkdrl.networks.LanguageModel`.
    vocab_size: the real vocabulary size, 1 <= vocab_size <=
      `model.config.vocab_size`.

  Returns:
    A `LanguageModel` (a NamedTuple: a static argument of jitted functions
    like the model itself); the same object for the same arguments.
  """
  padded = model.config.vocab_size
  validation.check_int("vocab_size", vocab_size, 1)
  if vocab_size > padded:
    validation.fail("vocab_size", vocab_size,
                    f"the model's embedding has only {padded} rows")
  if vocab_size == padded:
    return model
  return _restricted(model, vocab_size)


@functools.lru_cache(maxsize=256)
def _restricted(model, vocab_size: int):
  """One view per (model, vocab_size), so its compiled programs are reused
  by every agent and run that restricts the same model alike."""

  def sliced(fn):
    def with_real_logits(*args, **kwargs):
      out = fn(*args, **kwargs)
      if isinstance(out, tuple):  # (logits, cache)
        return (out[0][..., :vocab_size],) + tuple(out[1:])
      return out[..., :vocab_size]
    return with_real_logits

  return model._replace(
      unembedding=lambda params: model.unembedding(params)[:, :vocab_size],
      apply=sliced(model.apply), prefill=sliced(model.prefill),
      decode=sliced(model.decode))
