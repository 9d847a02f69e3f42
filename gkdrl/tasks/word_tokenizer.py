"""Word-level tokenizer shared by the built-in (generated) tasks.

Built-in tasks write every piece of text as words separated by single spaces,
punctuation included ("Ada is a baker from Lyon ."), so a WordLevel model
with a whitespace pre-tokenizer encodes it exactly and `decode(encode(text),
skip_special_tokens=True) == text`. The vocabulary comes from the task's
generator, never from sampled data, so it is the same for every seed.

The tokenizer is wrapped as a `transformers.PreTrainedTokenizerFast`, the same
type hub models use, so the rest of gkdrl handles every task alike.
"""

from collections.abc import Iterable

import tokenizers
from tokenizers import models
from tokenizers import pre_tokenizers
from tokenizers import processors
import transformers

PAD = "<pad>"
BOS = "<bos>"
EOS = "<eos>"
UNK = "<unk>"
# Fixed ids 0..3, so pad (0) and eos (2) never coincide.
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)


def make_word_tokenizer(
    words: Iterable[str]) -> transformers.PreTrainedTokenizerFast:
  """Builds a word-level tokenizer over a fixed vocabulary.

  Encoding with `add_special_tokens=True` (the default) prepends `<bos>`;
  `<eos>` is never added by the tokenizer (batching appends it to targets).
  Unknown words map to `<unk>`.

  Args:
    words: the vocabulary, in order; duplicates are dropped and the special
      tokens `<pad>`, `<bos>`, `<eos>`, `<unk>` always take ids 0 to 3.

  Returns:
    A `PreTrainedTokenizerFast` with pad, bos, eos and unk tokens set.

  Raises:
    ValueError: if a word is empty or contains whitespace.
  """
  vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
  for word in words:
    if not isinstance(word, str) or not word or word != "".join(word.split()):
      raise ValueError(
          f"words must be non-empty strings without whitespace, got {word!r}")
    vocab.setdefault(word, len(vocab))
  tokenizer = tokenizers.Tokenizer(models.WordLevel(vocab, unk_token=UNK))
  tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
  tokenizer.post_processor = processors.TemplateProcessing(
      single=f"{BOS} $A",
      pair=f"{BOS} $A $B",
      special_tokens=[(BOS, vocab[BOS])],
  )
  return transformers.PreTrainedTokenizerFast(
      tokenizer_object=tokenizer,
      pad_token=PAD,
      bos_token=BOS,
      eos_token=EOS,
      unk_token=UNK,
      # Decoding joins words with single spaces; the default clean-up would
      # glue punctuation to words ("pears ." -> "pears.") and break the
      # round trip.
      clean_up_tokenization_spaces=False,
  )
