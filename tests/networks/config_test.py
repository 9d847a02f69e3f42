"""Tests for gkdrl.networks.config.ModelConfig."""

import pytest

from gkdrl import networks
from tests.networks import hf_models

_SMALL = dict(vocab_size=100, d_model=16, n_layers=1, n_heads=4, d_ff=32)


@pytest.mark.parametrize("field,value,match", [
    ("n_kv_heads", 3, "n_kv_heads=3"),
    ("norm", "batch", "norm='batch'"),
    ("vocab_size", 0, "vocab_size=0"),
    ("activation", "tanh", "activation='tanh'"),
    ("position", "alibi", "position='alibi'"),
    ("model_type", "mamba", "model_type='mamba'"),
    ("eos_token_id", 10_000, "eos_token_id=10000"),
    ("norm_eps", 0.0, "norm_eps=0.0"),
    ("head_dim", 5, "head_dim=5"),
])
def test_rejects_bad_values_naming_the_field(field, value, match):
  with pytest.raises(ValueError, match=match):
    networks.ModelConfig(**{**_SMALL, field: value})


def test_defaults_fill_kv_heads_and_head_dim():
  config = networks.ModelConfig(**_SMALL)
  assert (config.n_kv_heads, config.head_dim) == (4, 4)


@pytest.mark.parametrize("name", hf_models.CONFIG_NAMES)
def test_round_trips_through_hf_dict(name):
  config = hf_models.jax_config(name)
  assert networks.ModelConfig.from_hf_config(config.to_hf_config()) == config


def test_hf_conversion_reads_family_switches():
  gpt2 = hf_models.jax_config("gpt2")
  assert (gpt2.norm, gpt2.position, gpt2.gated_mlp, gpt2.activation) == (
      "layer", "learned", False, "gelu_new")
  assert gpt2.d_ff == 4 * gpt2.d_model and gpt2.tie_embeddings
  qwen2 = hf_models.jax_config("qwen2")
  assert qwen2.qkv_bias and not qwen2.out_bias and qwen2.rope_theta == 1e6
  llama = hf_models.jax_config("llama_gqa_untied")
  assert (llama.n_kv_heads, llama.head_dim) == (2, 12)
  hf = hf_models.hf_config("llama_gqa_tied").to_dict()
  del hf["tie_word_embeddings"]  # LlamaConfig's default is untied.
  assert not networks.ModelConfig.from_hf_config(hf).tie_embeddings


@pytest.mark.parametrize("update,match", [
    ({"model_type": "mamba"}, "mamba"),
    ({"rope_parameters": {"rope_type": "llama3", "factor": 8.0}}, "rope"),
    ({"use_sliding_window": True}, "sliding"),
    ({"hidden_act": "quick_gelu"}, "quick_gelu"),
])
def test_hf_conversion_rejects_unsupported_options(update, match):
  hf = {**hf_models.hf_config("qwen2").to_dict(), **update}
  with pytest.raises(ValueError, match=match):
    networks.ModelConfig.from_hf_config(hf)


def test_to_hf_config_rejects_switches_the_family_cannot_hold():
  config = networks.ModelConfig(**_SMALL, model_type="gpt2")  # rms, rope...
  with pytest.raises(ValueError, match="model_type='gpt2' requires norm"):
    config.to_hf_config()
