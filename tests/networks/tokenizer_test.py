"""Tests for gkdrl.networks.tokenizer (GGUF metadata -> tokenizers BPE)."""

import pytest
import transformers

from gkdrl import assets
from gkdrl import networks
from tests import conftest

STRINGS = (
    "The capital of France is",
    "  Leading spaces,\ttabs\n\nand new lines  ",
    "Numbers: 12345 and 3.14159; x=42",
    "Unicode: Ünïcödé, emoji \U0001f916, 中文, Ελληνικά",
    "don't I'll we've THEY'RE",
    "<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n",
)


@pytest.fixture(scope="module")
def smollm2_path():
  return conftest.asset("smollm2")


@pytest.mark.assets
@pytest.mark.torch
def test_gguf_tokenizer_matches_transformers(smollm2_path):
  try:
    import torch  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    conftest.skip_or_fail("torch is not installed: pip install torch==2.13.0")
  ours = networks.load_tokenizer(smollm2_path)
  assert isinstance(ours, transformers.PreTrainedTokenizerFast)
  reference = transformers.AutoTokenizer.from_pretrained(
      str(smollm2_path.parent), gguf_file=smollm2_path.name)
  for text in STRINGS:
    ids = ours(text)["input_ids"]
    assert ids == reference(text)["input_ids"], text
    assert ours.decode(ids) == text
  assert ours.convert_ids_to_tokens(list(range(4))) == (
      reference.convert_ids_to_tokens(list(range(4))))
  for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
    assert getattr(ours, name) == getattr(reference, name), name
  assert len(ours) == len(reference) == 49152


@pytest.mark.assets
def test_gguf_tokenizer_special_tokens_and_chat_template(smollm2_path):
  tokenizer = networks.load_tokenizer(smollm2_path)
  ids = tokenizer("<|im_start|>user")["input_ids"]
  assert ids[0] == tokenizer.convert_tokens_to_ids("<|im_start|>")
  # SmolLM2 splits digits one by one (llama.cpp's "smollm" pre-tokenizer).
  digits = tokenizer("2024")["input_ids"]
  assert len(digits) == 4
  prompt = tokenizer.apply_chat_template(
      [{"role": "user", "content": "Hi"}], tokenize=False,
      add_generation_prompt=True)
  assert prompt.endswith("<|im_start|>assistant\n")


def test_directory_tokenizer_and_errors(tmp_path):
  minilm = None
  try:
    minilm = assets.locate("minilm")
  except FileNotFoundError:
    pass
  if minilm is not None:
    tokenizer = networks.load_tokenizer(minilm)
    assert tokenizer("hello world")["input_ids"][0] == tokenizer.cls_token_id
  with pytest.raises(FileNotFoundError, match="nowhere"):
    networks.load_tokenizer(tmp_path / "nowhere")
  with pytest.raises(FileNotFoundError, match="no tokenizer files"):
    networks.load_tokenizer(tmp_path)
