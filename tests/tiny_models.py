"""The one tiny-model config the agent, runner and parallel tests share."""

import tokenizers
from tokenizers import decoders
from tokenizers import models
from tokenizers import pre_tokenizers
import transformers

from gkdrl import networks


def tiny_config(task, d_model: int, n_layers: int) -> networks.ModelConfig:
  """A small Llama-family config for `task`'s tokenizer."""
  tok = task.tokenizer
  return networks.ModelConfig(
      vocab_size=len(tok), d_model=d_model, n_layers=n_layers, n_heads=2,
      n_kv_heads=1, d_ff=2 * d_model, max_positions=128,
      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
      bos_token_id=tok.bos_token_id)


def tiny_t5_config(task, d_model: int, n_layers: int, *,
                   gated: bool = False) -> networks.T5Config:
  """A small T5 config for `task`'s tokenizer: v1.0 (ReLU, tied head) or,
  with `gated`, v1.1 (gated GELU, untied head)."""
  tok = task.tokenizer
  return networks.T5Config(
      vocab_size=len(tok), d_model=d_model, n_layers=n_layers, n_heads=2,
      head_dim=d_model // 2, d_ff=2 * d_model,
      activation="gelu_new" if gated else "relu", gated_mlp=gated,
      tie_embeddings=not gated, relative_buckets=8,
      relative_max_distance=32, eos_token_id=tok.eos_token_id,
      pad_token_id=tok.pad_token_id,
      decoder_start_token_id=tok.pad_token_id)


def word_piece_tokenizer(task) -> transformers.PreTrainedTokenizerFast:
  """Another tokenizer for a built-in task's text: word pieces over its
  words, those of up to six characters whole, longer ones letter by letter
  ("dentist" -> d ##e ##n ##t ##i ##s ##t), with special tokens of its own
  ([UNK], [PAD], [EOS], [BOS]) at other ids than the task's."""
  words = [w for w in task.tokenizer.get_vocab() if not w.startswith("<")]
  vocab = {t: i for i, t in enumerate(["[UNK]", "[PAD]", "[EOS]", "[BOS]"])}
  for word in sorted(words):
    if len(word) <= 6:
      vocab.setdefault(word, len(vocab))
  for char in sorted({c for w in words for c in w}):
    vocab.setdefault(char, len(vocab))
    vocab.setdefault("##" + char, len(vocab))
  tok = tokenizers.Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
  tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
  tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)
  return transformers.PreTrainedTokenizerFast(
      tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
      eos_token="[EOS]", bos_token="[BOS]")
