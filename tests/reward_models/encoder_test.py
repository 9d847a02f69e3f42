"""Tests of the Haiku BERT/RoBERTa encoder."""

import jax
import numpy as np
import pytest

from gkdrl import reward_models as rm
from gkdrl.reward_models import encoder
from tests import conftest

SENTENCES = [
    "A man is eating food.",
    "The quick brown fox jumps over the lazy dog near the riverbank at dawn.",
    "Hi",
    "Entailment rewards score the factual consistency of summaries.",
]


def _config(**overrides):
  kwargs = dict(vocab_size=50, hidden_size=8, num_layers=1, num_heads=2,
                intermediate_size=16)
  return rm.EncoderConfig(**{**kwargs, **overrides})


class TestEncoderConfig:

  @pytest.mark.parametrize("overrides,field", [
      (dict(family="gpt2"), "family"),
      (dict(activation="tanh"), "activation"),
      (dict(num_heads=3), "num_heads"),
      (dict(num_layers=0), "num_layers"),
      (dict(pad_token_id=50), "pad_token_id"),
      (dict(num_labels=-1), "num_labels"),
  ])
  def test_rejects_bad_values(self, overrides, field):
    with pytest.raises(ValueError, match=field):
      _config(**overrides)

  def test_roberta_max_tokens_leaves_room_for_the_offset(self):
    config = _config(family="roberta", pad_token_id=1,
                     max_position_embeddings=514)
    assert config.max_tokens == 512
    assert _config(max_position_embeddings=512).max_tokens == 512


def test_roberta_positions_match_fairseq():
  ids = np.array([[0, 7, 8, 2, 1, 1], [0, 9, 2, 2, 5, 2]])
  config = _config(family="roberta", pad_token_id=1)
  got = np.asarray(encoder.position_ids(config, ids))
  # fairseq make_positions: real tokens count up from pad + 1, pads = pad.
  np.testing.assert_array_equal(got, [[2, 3, 4, 5, 1, 1], [2, 3, 4, 5, 6, 7]])
  bert = np.asarray(encoder.position_ids(_config(), ids))
  np.testing.assert_array_equal(bert, np.tile(np.arange(6), (2, 1)))


def test_padding_does_not_change_valid_outputs():
  config = _config(num_layers=2)
  model = rm.make_encoder(config)
  ids = np.array([[3, 4, 5, 6]], np.int32)
  params = jax.jit(model.init)(jax.random.key(0), ids, np.ones_like(ids))
  apply = jax.jit(model.apply)
  short = apply(params, ids, np.ones_like(ids))
  padded_ids = np.concatenate([ids, np.zeros((1, 5), np.int32)], axis=1)
  mask = (np.arange(9) < 4)[None].astype(np.int32)
  long = apply(params, padded_ids, mask)
  np.testing.assert_allclose(long[:, :4], short, atol=1e-5)
  assert np.isfinite(np.asarray(long)).all()


def test_classifier_needs_labels():
  with pytest.raises(ValueError, match="num_labels"):
    rm.make_sequence_classifier(_config())


@pytest.mark.assets
@pytest.mark.torch
def test_minilm_matches_transformers_bert_model(torch):
  import transformers  # pylint: disable=g-import-not-at-top
  path = conftest.asset("minilm")
  config, params = rm.load_encoder(path)
  assert (config.family, config.num_layers, config.hidden_size) == (
      "bert", 6, 384)
  tokenizer = transformers.AutoTokenizer.from_pretrained(
      str(path), local_files_only=True)
  # The checkpoint's tokenizer pads to 128: compare valid positions only.
  enc = tokenizer(SENTENCES, padding="max_length", max_length=128,
                  truncation=True, return_tensors="np")
  ours = jax.jit(rm.make_encoder(config).apply)(
      params, enc["input_ids"], enc["attention_mask"], enc["token_type_ids"])
  reference = transformers.BertModel.from_pretrained(
      str(path), local_files_only=True, attn_implementation="eager").eval()
  with torch.no_grad():
    expected = reference(
        **{k: torch.from_numpy(v) for k, v in enc.items()}
    ).last_hidden_state.numpy()
  valid = enc["attention_mask"].astype(bool)  # [N, 128]
  assert ours.shape == expected.shape == (4, 128, 384)
  np.testing.assert_allclose(np.asarray(ours)[valid], expected[valid],
                             atol=1e-4, rtol=1e-4)
