"""`load_tokenizer(path)`: a transformers tokenizer for a model directory or GGUF.

`tokenizer_difference(a, b)` says in words how two tokenizers differ (None
when they give the same ids to the same strings).

For a Hugging Face directory this is `AutoTokenizer` on local files. A GGUF
file has no tokenizer.json; its tokenizer is described by metadata
(`tokenizer.ggml.tokens`, `.merges`, `.token_type`, `.pre`, special ids),
from which we build a byte-level BPE with the `tokenizers` library.
(transformers' own GGUF loader imports PyTorch, which gkdrl must not need.)

Pre-tokenizers follow llama.cpp's `tokenizer.ggml.pre` names: "gpt2" and
"default" use GPT-2's regex; "smollm" (also starcoder, refact, command-r,
codeshell, exaone, minerva) first isolates every digit, as SmolLM2's own
tokenizer.json does; the Llama-3 and Qwen2 families split with their own
regexes.
"""

import importlib.util
import logging
import os
import pathlib

import tokenizers
import transformers
from tokenizers import decoders
from tokenizers import models
from tokenizers import pre_tokenizers
from tokenizers import processors

from gkdrl.networks import gguf_io

_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_SPLITS = {"llama3": _LLAMA3_SPLIT, "llama-bpe": _LLAMA3_SPLIT,
           "llama-v3": _LLAMA3_SPLIT, "smaug-bpe": _LLAMA3_SPLIT,
           "qwen2": _QWEN2_SPLIT, "deepseek-r1-qwen": _QWEN2_SPLIT}
_DIGITS_FIRST = ("smollm", "starcoder", "refact", "command-r", "codeshell",
                 "exaone", "minerva")
_GPT2_LIKE = ("gpt2", "default", "mpt", "olmo", "jais")
_CONTROL, _USER_DEFINED = 3, 4  # llama.cpp token types


def _byte_alphabet() -> dict[int, str]:
  """GPT-2's byte -> printable character table (bytes_to_unicode)."""
  printable = (list(range(ord("!"), ord("~") + 1))
               + list(range(ord("\xa1"), ord("\xac") + 1))
               + list(range(ord("\xae"), ord("\xff") + 1)))
  chars, extra = {}, 0
  for b in range(256):
    if b in printable:
      chars[b] = chr(b)
    else:
      chars[b] = chr(256 + extra)
      extra += 1
  return chars


def _pre_tokenizer(pre: str | None, where: str):
  byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False,
                                        use_regex=True)
  if pre in _SPLITS:
    return pre_tokenizers.Sequence([
        pre_tokenizers.Split(tokenizers.Regex(_SPLITS[pre]),
                             behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
  if pre in _DIGITS_FIRST:
    return pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), byte_level])
  if pre not in _GPT2_LIKE and pre is not None:
    logging.warning("%s: unknown tokenizer.ggml.pre=%r; using GPT-2's "
                    "pre-tokenizer.", where, pre)
  return byte_level


def tokenizer_from_gguf(path: str | os.PathLike
                        ) -> transformers.PreTrainedTokenizerFast:
  """Builds the byte-level BPE tokenizer described by a GGUF file's metadata.

  Args:
    path: the .gguf file.

  Returns:
    A `PreTrainedTokenizerFast` with the file's vocabulary, merges, special
    tokens, BOS behaviour and chat template.

  Raises:
    ValueError: the file describes a tokenizer other than byte-level BPE
      (`tokenizer.ggml.model` != "gpt2") or has no vocabulary.
  """
  where = str(path)
  reader = gguf_io.read(path)
  meta = gguf_io.metadata(reader)
  kind = meta.get("tokenizer.ggml.model")
  if kind != "gpt2":
    raise ValueError(f"{where}: tokenizer.ggml.model={kind!r} is not "
                     "supported; only byte-level BPE ('gpt2') is.")
  tokens = gguf_io.string_array(reader, "tokenizer.ggml.tokens")
  merges = gguf_io.string_array(reader, "tokenizer.ggml.merges")
  if not tokens or merges is None:
    raise ValueError(f"{where}: missing tokenizer.ggml.tokens or "
                     "tokenizer.ggml.merges.")
  types = gguf_io.string_array(reader, "tokenizer.ggml.token_type") or (
      [1] * len(tokens))
  alphabet = _byte_alphabet()
  spelled = set(alphabet.values())

  def respell(token: str) -> str:
    # Byte-level vocabularies spell every token in the byte alphabet; a few
    # files store a control token as plain UTF-8.
    if set(token) <= spelled:
      return token
    return "".join(alphabet[b] for b in token.encode("utf-8"))

  vocab = {respell(t): i for i, t in enumerate(tokens)}
  bpe = models.BPE(vocab=vocab,
                   merges=[tuple(m.split(" ", 1)) for m in merges],
                   fuse_unk=False, byte_fallback=False)
  backend = tokenizers.Tokenizer(bpe)
  backend.pre_tokenizer = _pre_tokenizer(meta.get("tokenizer.ggml.pre"),
                                         where)
  backend.decoder = decoders.ByteLevel()
  backend.add_special_tokens([
      tokenizers.AddedToken(t, special=True, normalized=False)
      for t, ty in zip(tokens, types) if ty == _CONTROL and set(t) <= spelled])
  backend.add_tokens([
      tokenizers.AddedToken(t, special=False, normalized=False)
      for t, ty in zip(tokens, types) if ty == _USER_DEFINED])

  def special(key):
    token_id = meta.get(f"tokenizer.ggml.{key}")
    return None if token_id is None else tokens[int(token_id)]

  bos = special("bos_token_id")
  if meta.get("tokenizer.ggml.add_bos_token", False) and bos is not None:
    backend.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
        special_tokens=[(bos, vocab[respell(bos)])])
  else:
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
  kwargs = dict(bos_token=bos, eos_token=special("eos_token_id"),
                unk_token=special("unknown_token_id"),
                pad_token=special("padding_token_id"))
  template = meta.get("tokenizer.chat_template")
  if template:
    kwargs["chat_template"] = template
  return transformers.PreTrainedTokenizerFast(
      tokenizer_object=backend,
      **{k: v for k, v in kwargs.items() if v is not None})


def load_tokenizer(path: str | os.PathLike):
  """A transformers tokenizer for a model directory or a GGUF file.

  Args:
    path: a local Hugging Face directory with tokenizer files, or a `.gguf`
      file (tokenizer built from its metadata, see the module docstring).

  Returns:
    A `transformers` tokenizer (`PreTrainedTokenizerFast` for GGUF).

  Raises:
    FileNotFoundError: `path` does not exist or has no tokenizer files.
    ValueError: the directory's only tokenizer is a SentencePiece model
      (spiece.model, as in some T5 / mT5 directories) and the
      `sentencepiece` package, which transformers needs to convert it, is
      not installed.
  """
  path = pathlib.Path(path)
  if not path.exists():
    raise FileNotFoundError(f"Tokenizer path {str(path)!r} does not exist.")
  if path.is_file():
    if path.suffix != ".gguf":
      raise ValueError(f"{path}: not a directory or a .gguf file.")
    return tokenizer_from_gguf(path)
  names = ("tokenizer.json", "tokenizer_config.json", "vocab.json",
           "vocab.txt", "tokenizer.model", "spiece.model")
  if not any((path / n).exists() for n in names):
    raise FileNotFoundError(f"{path}: no tokenizer files (one of {names}).")
  sentencepiece = [n for n in ("spiece.model", "tokenizer.model")
                   if (path / n).exists()]
  if (sentencepiece and not (path / "tokenizer.json").exists()
      and importlib.util.find_spec("sentencepiece") is None):
    raise ValueError(
        f"{path}: the tokenizer is only a SentencePiece model "
        f"({sentencepiece[0]}, no tokenizer.json); converting it needs "
        "`pip install sentencepiece` (or a tokenizer.json written once by "
        "transformers' save_pretrained).")
  return transformers.AutoTokenizer.from_pretrained(str(path),
                                                    local_files_only=True)


# The special tokens whose ids two tokenizers must agree on.
# The pad token is not compared: it is never a prediction target.
_SPECIAL_IDS = ("eos_token_id", "bos_token_id", "unk_token_id")


def tokenizer_difference(tokenizer, reference) -> str | None:
  """How `tokenizer` differs from `reference`, in words, or None.

  Two tokenizers agree when they map the same strings to the same ids
  (`get_vocab()`, added tokens included) and name the same EOS, BOS and
  UNK ids.
  """
  vocab, want = tokenizer.get_vocab(), reference.get_vocab()
  if vocab != want:
    if len(vocab) != len(want):
      return f"{len(vocab)} tokens against {len(want)}"
    # The lowest id whose token differs (ties by token: deterministic).
    token = min(set(want.items()) ^ set(vocab.items()),
                key=lambda item: (item[1], item[0]))[0]
    return (f"token {token!r} has id {vocab.get(token)} against "
            f"{want.get(token)}")
  for attr in _SPECIAL_IDS:
    ours, theirs = (getattr(t, attr, None) for t in (tokenizer, reference))
    if ours != theirs:
      return f"{attr} {ours} against {theirs}"
  return None
