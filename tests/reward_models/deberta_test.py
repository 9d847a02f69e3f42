"""Tests of the Haiku DeBERTa-v2/v3 classifier against Hugging Face's."""

import json

import jax
import numpy as np
import pytest

from gkdrl import reward_models as rm
from gkdrl.reward_models import classifiers
from gkdrl.reward_models import deberta
from gkdrl.reward_models import deberta_weights
from tests.reward_models import deberta_checkpoints

PREMISES = [
    "The cat sat on the mat.",
    "A dog ran in the park. The tree is big. " * 6,  # truncated at 96 tokens
    "A woman drives a green car on the road today.",
    "The man eats food.",
]
HYPOTHESES = ["The cat sat.", "A dog ran in the park today.",
              "The house is red.", "A man eats" + " food" * 30]


def _config(**overrides):
  kwargs = dict(vocab_size=50, hidden_size=8, num_layers=1, num_heads=2,
                intermediate_size=16)
  return deberta.DebertaConfig(**{**kwargs, **overrides})


@pytest.fixture(scope="module", params=sorted(deberta_checkpoints.VARIANTS))
def torch_deberta(request, tmp_path_factory, torch_module):
  """(variant, EntailmentReward, transformers model, tokenizer)."""
  path = tmp_path_factory.mktemp(request.param)
  model, tokenizer = deberta_checkpoints.write_torch_deberta(
      torch_module, path, request.param, seed=2)
  reward = rm.EntailmentReward(path, rm.EntailmentConfig(batch_size=4))
  return request.param, reward, model, tokenizer


@pytest.mark.torch
class TestParityWithTransformers:

  def test_padded_batch_probabilities(self, torch_deberta):
    import torch  # pylint: disable=g-import-not-at-top
    variant, reward, model, tokenizer = torch_deberta
    assert isinstance(reward.encoder_config, deberta.DebertaConfig)
    # One padded batch of rows of different lengths, fed to both models.
    enc = tokenizer(PREMISES, HYPOTHESES, truncation="longest_first",
                    max_length=reward.max_length, padding=True,
                    return_tensors="np")
    lengths = enc["attention_mask"].sum(1)
    assert len(set(lengths.tolist())) == len(PREMISES)
    types = enc.get("token_type_ids", np.zeros_like(enc["input_ids"]))
    ours = jax.jit(reward.classifier.apply)(
        reward.init(None), enc["input_ids"].astype(np.int32),
        enc["attention_mask"].astype(np.int32), types.astype(np.int32))
    with torch.no_grad():
      expected = model(
          **{k: torch.from_numpy(v) for k, v in enc.items()}).logits
    probs = jax.nn.softmax(np.asarray(ours, np.float64), -1)
    np.testing.assert_allclose(
        probs, torch.softmax(expected.double(), -1).numpy(), atol=1e-4)
    np.testing.assert_allclose(ours, expected.numpy(), atol=1e-4, rtol=1e-4)
    assert np.ptp(np.asarray(ours)[:, 1]) > 0.1, variant  # not constant

  def test_entailment_reward_end_to_end(self, torch_deberta):
    import torch  # pylint: disable=g-import-not-at-top
    _, reward, model, tokenizer = torch_deberta
    params = reward.init(None)
    out = reward.score(params, rm.RewardInputs(
        sources=PREMISES, completions=HYPOTHESES))
    assert reward.labels[reward.entailment_index] == "ENTAILMENT"
    for i, (premise, hypothesis) in enumerate(zip(PREMISES, HYPOTHESES)):
      enc = tokenizer([premise], [hypothesis], truncation="longest_first",
                      max_length=reward.max_length, return_tensors="pt")
      with torch.no_grad():
        expected = torch.softmax(model(**enc).logits[0].double(), -1)
      np.testing.assert_allclose(out[i], expected[1].item(), atol=1e-4)

  def test_log_buckets_match_transformers(self):
    from transformers.models.deberta_v2 import modeling_deberta_v2 as hf  # pylint: disable=g-import-not-at-top
    import torch  # pylint: disable=g-import-not-at-top
    relative = np.arange(-1100, 1101)
    for buckets, max_position in ((256, 512), (8, 64), (64, 128)):
      expected = hf.make_log_bucket_position(
          torch.from_numpy(relative), buckets, max_position).long().numpy()
      got = deberta.log_bucket_position(relative, buckets, max_position)
      np.testing.assert_array_equal(got, expected)


def test_relative_index_is_clipped_and_shared_by_both_terms():
  config = _config(relative_attention=True, pos_att_type=("c2p",),
                   max_relative_positions=3)
  index = deberta.relative_index(config, 6)
  # Row i - j + S, clipped to [0, 2S - 1] with S = 3.
  assert index[0, 0] == 3 and index[5, 0] == 5 and index[0, 5] == 0
  assert index.min() >= 0 and index.max() <= 5


def test_scale_counts_position_terms():
  assert _config().scale_factor == 1
  assert _config(pos_att_type=("p2c", "c2p")).scale_factor == 3


@pytest.mark.parametrize("overrides,field", [
    (dict(pos_att_type=("p2p",)), "pos_att_type"),
    (dict(pos_att_type="c2p"), "pos_att_type"),
    (dict(conv_kernel_size=2), "conv_kernel_size"),
    (dict(norm_rel_ebd="rms"), "norm_rel_ebd"),
    (dict(hidden_act="mish"), "hidden_act"),
    (dict(num_heads=3), "num_heads"),
    (dict(type_vocab_size=-1), "type_vocab_size"),
])
def test_config_rejects_bad_values(overrides, field):
  with pytest.raises(ValueError, match=f"{field}=.* is not allowed"):
    _config(**overrides)


class TestHFConfig:

  HF = dict(model_type="deberta-v2", vocab_size=50, hidden_size=8,
            num_hidden_layers=1, num_attention_heads=2, intermediate_size=16)

  def test_reads_v3_settings(self):
    config = deberta_weights.deberta_config_from_hf(
        dict(self.HF, pos_att_type="p2c|c2p", relative_attention=True,
             position_buckets=256, norm_rel_ebd="layer_norm",
             position_biased_input=False, share_att_key=True),
        num_labels=3)
    assert config.pos_att_type == ("p2c", "c2p")
    assert (config.span, config.max_relative) == (256, 512)
    assert not config.position_biased_input and config.share_att_key
    assert config.norm_rel_ebd == "layer_norm" and config.num_labels == 3

  @pytest.mark.parametrize("extra,field", [
      (dict(model_type="bert"), "model_type"),
      (dict(attention_head_size=3), "attention_head_size"),
      (dict(pooler_hidden_size=16), "pooler_hidden_size"),
      (dict(pos_att_type="c2p|p2p"), "pos_att_type"),
  ])
  def test_rejects_unsupported(self, extra, field):
    with pytest.raises(ValueError, match=field):
      deberta_weights.deberta_config_from_hf(dict(self.HF, **extra))

  def test_registry_picks_deberta_and_reports_missing_tensors(
      self, tmp_path):
    from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
    (tmp_path / "config.json").write_text(json.dumps(self.HF))
    save_file({"deberta.embeddings.word_embeddings.weight":
               np.zeros((50, 8), np.float32)},
              str(tmp_path / "model.safetensors"))
    assert classifiers.ARCHITECTURES["deberta-v2"] is not (
        classifiers.ARCHITECTURES["bert"])
    with pytest.raises(ValueError, match="lacks .* DeBERTa tensors"):
      classifiers.load_sequence_classifier(tmp_path, num_labels=3)
    (tmp_path / "config.json").write_text(
        json.dumps(dict(self.HF, model_type="gpt2")))
    with pytest.raises(ValueError, match="model_type='gpt2' is not allowed"):
      classifiers.load_sequence_classifier(tmp_path, num_labels=3)


def test_padding_does_not_change_logits():
  config = _config(num_layers=2, relative_attention=True, num_labels=3,
                   pos_att_type=("p2c", "c2p"), position_buckets=4,
                   max_relative_positions=16, conv_kernel_size=3)
  model = deberta.make_deberta_classifier(config)
  ids = np.array([[3, 4, 5, 6, 7, 8, 9]], np.int32)
  params = model.init(jax.random.key(0), ids, np.ones_like(ids))
  short = model.apply(params, ids, np.ones_like(ids))
  padded = np.concatenate([ids, np.zeros((1, 9), np.int32)], axis=1)
  long = model.apply(params, padded, (padded > 0).astype(np.int32))
  np.testing.assert_allclose(long, short, atol=1e-5)
