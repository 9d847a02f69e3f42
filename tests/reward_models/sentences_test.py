"""Tests of sentence splitting and document chunking."""

from gkdrl import reward_models as rm


def test_split_sentences():
  assert rm.split_sentences("The cat sat. A dog ran!\nIs it big?  ") == [
      "The cat sat.", "A dog ran!", "Is it big?"]
  assert rm.split_sentences("  \n ") == []


def test_chunk_document_packs_whole_sentences():
  count = lambda texts: [len(t.split()) for t in texts]
  text = "One two three. Four five. Six. Seven eight nine ten eleven."
  assert rm.chunk_document(text, count, 5) == [
      "One two three. Four five.", "Six.", "Seven eight nine ten eleven."]
  assert rm.chunk_document(text, count, 100) == [text]
  assert rm.chunk_document("", count, 5) == [""]
