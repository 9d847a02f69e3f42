"""Tests for gkdrl/tasks/word_tokenizer.py."""

import pytest
import transformers

from gkdrl.tasks import word_tokenizer

WORDS = ["Ada", "likes", "pears", ".", "####", "5", "Ada"]


@pytest.fixture(scope="module")
def tokenizer():
  return word_tokenizer.make_word_tokenizer(WORDS)


def test_special_tokens_have_fixed_distinct_ids(tokenizer):
  assert isinstance(tokenizer, transformers.PreTrainedTokenizerFast)
  ids = [tokenizer.pad_token_id, tokenizer.bos_token_id,
         tokenizer.eos_token_id, tokenizer.unk_token_id]
  assert ids == [0, 1, 2, 3]
  assert tokenizer.pad_token_id != tokenizer.eos_token_id


def test_vocabulary_is_deduplicated_in_order(tokenizer):
  assert len(tokenizer) == 4 + len(dict.fromkeys(WORDS))
  assert tokenizer.convert_tokens_to_ids(["Ada", "likes", "5"]) == [4, 5, 9]


def test_encode_prepends_bos_and_round_trips(tokenizer):
  text = "Ada likes pears . #### 5"
  ids = tokenizer(text)["input_ids"]
  assert ids[0] == tokenizer.bos_token_id
  assert len(ids) == 1 + len(text.split())
  assert tokenizer.eos_token_id not in ids
  assert tokenizer.decode(ids, skip_special_tokens=True) == text
  plain = tokenizer(text, add_special_tokens=False)["input_ids"]
  assert plain == ids[1:]


def test_unknown_words_map_to_unk(tokenizer):
  ids = tokenizer("Ada eats plums", add_special_tokens=False)["input_ids"]
  assert ids == [4, tokenizer.unk_token_id, tokenizer.unk_token_id]


@pytest.mark.parametrize("bad", ["", "two words", "tab\there"])
def test_rejects_words_with_whitespace(bad):
  with pytest.raises(ValueError, match="words must be non-empty"):
    word_tokenizer.make_word_tokenizer(["ok", bad])


def test_save_and_reload(tokenizer, tmp_path):
  tokenizer.save_pretrained(tmp_path)
  reloaded = transformers.PreTrainedTokenizerFast.from_pretrained(tmp_path)
  text = "Ada likes pears ."
  assert reloaded(text)["input_ids"] == tokenizer(text)["input_ids"]
  assert reloaded.pad_token_id == 0 and reloaded.eos_token_id == 2
