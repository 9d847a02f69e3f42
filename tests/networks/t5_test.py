"""Parity of gkdrl's T5 with transformers' T5ForConditionalGeneration."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gkdrl import networks
from gkdrl.networks import t5_layers
from tests import conftest
from tests.networks import hf_t5_models

V = hf_t5_models.VOCAB_SIZE
_RNG = np.random.default_rng(0)
# Sources of 20 slots: full, right-padded (HF's side) and left-padded.
SRC_MASK = np.array([[1] * 20, [1] * 9 + [0] * 11, [0] * 6 + [1] * 14], bool)
SRC = np.where(SRC_MASK, _RNG.integers(2, V, SRC_MASK.shape), 0)
# Decoder inputs: the start token, then targets of different lengths.
DEC_MASK = np.array([[1] * 15, [1] * 4 + [0] * 11, [1] * 11 + [0] * 4], bool)
DEC = np.where(DEC_MASK, _RNG.integers(2, V, DEC_MASK.shape), 0)
DEC[:, 0] = hf_t5_models.START


def _torch():
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    conftest.skip_or_fail("torch is not installed: pip install torch==2.13.0")
  return torch


@pytest.fixture(scope="module", params=hf_t5_models.T5_NAMES)
def hf_t5(request, tmp_path_factory):
  """(name, directory, torch model); v1.1 is saved in several shards."""
  directory = tmp_path_factory.mktemp(request.param)
  shards = "20KB" if request.param == "v1_1" else None
  model = hf_t5_models.save_random_t5(request.param, directory, _torch(),
                                      max_shard_size=shards)
  return request.param, directory, model


@pytest.fixture(scope="module")
def loaded(hf_t5):
  model, params = networks.from_pretrained(hf_t5[1])
  return model, params, jax.jit(model.apply)


def _hf_logits(hf_model, src, src_mask, dec, dec_mask):
  torch = _torch()
  with torch.no_grad():
    out = hf_model(
        input_ids=torch.as_tensor(np.asarray(src), dtype=torch.long),
        attention_mask=torch.as_tensor(np.asarray(src_mask), dtype=torch.long),
        decoder_input_ids=torch.as_tensor(np.asarray(dec), dtype=torch.long),
        decoder_attention_mask=torch.as_tensor(np.asarray(dec_mask),
                                               dtype=torch.long))
  return out.logits.numpy()


def _masked(logits, mask):
  return np.where(mask[..., None], logits, 0.0)


@pytest.mark.torch
def test_config_read_from_directory(hf_t5, loaded):
  name, directory, _ = hf_t5
  config = loaded[0].config
  assert config.is_encoder_decoder and loaded[0].is_encoder_decoder
  assert (config.n_layers, config.n_decoder_layers) == (2, 3)
  assert (config.n_heads, config.head_dim, config.d_ff) == (4, 6, 48)
  if name == "v1_0":
    assert (config.activation, config.gated_mlp) == ("relu", False)
    assert config.tie_embeddings and config.scale_decoder_outputs
  else:
    assert (config.activation, config.gated_mlp) == ("gelu_new", True)
    assert not config.tie_embeddings and not config.scale_decoder_outputs
    assert (directory / "model.safetensors.index.json").exists()


@pytest.mark.torch
def test_logits_match_transformers_on_padded_batch(hf_t5, loaded):
  _, _, hf_model = hf_t5
  _, params, apply = loaded
  expected = _hf_logits(hf_model, SRC, SRC_MASK, DEC, DEC_MASK)
  got = np.asarray(apply(params, SRC, SRC_MASK, DEC, DEC_MASK))
  assert got.dtype == np.float32 and got.shape == DEC.shape + (V,)
  assert np.abs(_masked(expected, DEC_MASK)).max() > 0.5  # not trivial
  np.testing.assert_allclose(_masked(got, DEC_MASK),
                             _masked(expected, DEC_MASK), atol=1e-4, rtol=0)
  # Each row equals transformers on the row alone, without any padding.
  for row in range(len(SRC)):
    src = SRC[row, SRC_MASK[row]][None]
    dec = DEC[row, DEC_MASK[row]][None]
    alone = _hf_logits(hf_model, src, np.ones_like(src), dec,
                       np.ones_like(dec))
    np.testing.assert_allclose(got[row, DEC_MASK[row]], alone[0], atol=1e-4,
                               rtol=0)


@pytest.mark.torch
def test_save_pretrained_loads_in_transformers(hf_t5, loaded, tmp_path):
  import transformers  # pylint: disable=g-import-not-at-top
  name = hf_t5[0]
  model, params, apply = loaded
  out = networks.save_pretrained(model, params, tmp_path / "saved")
  hf_config = json.loads((out / "config.json").read_text())
  assert hf_config["is_encoder_decoder"] and hf_config["model_type"] == "t5"
  generation = json.loads((out / "generation_config.json").read_text())
  assert generation["decoder_start_token_id"] == hf_t5_models.START
  hf_model = transformers.T5ForConditionalGeneration.from_pretrained(out)
  hf_model.eval()
  assert (hf_model.lm_head.weight is hf_model.shared.weight) == (
      name == "v1_0")
  expected = _hf_logits(hf_model, SRC, SRC_MASK, DEC, DEC_MASK)
  got = np.asarray(apply(params, SRC, SRC_MASK, DEC, DEC_MASK))
  np.testing.assert_allclose(_masked(got, DEC_MASK),
                             _masked(expected, DEC_MASK), atol=1e-4, rtol=0)
  reloaded_model, reloaded = networks.from_pretrained(out)
  assert reloaded_model.config == model.config
  jax.tree.map(np.testing.assert_array_equal, reloaded, params)


def _greedy(model, params, src, src_mask, steps):
  """Greedy tokens [B, steps] from prefill + decode, pad after EOS."""
  b = src.shape[0]
  cache = model.init_cache(b, steps + 1, src.shape[1])
  start = jnp.full((b, 1), model.config.decoder_start_token_id, jnp.int32)
  logits, cache = jax.jit(model.prefill)(params, src, src_mask, start, None,
                                          cache)
  logits, decode = logits[:, 0], jax.jit(model.decode)
  tokens, done = [], np.zeros(b, bool)
  for _ in range(steps):
    token = np.where(done, model.config.pad_token_id,
                     np.argmax(np.asarray(logits), axis=-1))
    tokens.append(token)
    done |= token == model.config.eos_token_id
    logits, cache = decode(params, jnp.asarray(token, jnp.int32), cache)
  return np.stack(tokens, axis=1)


@pytest.mark.torch
def test_greedy_decoding_matches_generate(hf_t5, loaded):
  torch = _torch()
  _, _, hf_model = hf_t5
  model, params, _ = loaded
  steps = 8
  with torch.no_grad():
    expected = hf_model.generate(
        input_ids=torch.as_tensor(SRC, dtype=torch.long),
        attention_mask=torch.as_tensor(SRC_MASK, dtype=torch.long),
        do_sample=False, max_new_tokens=steps,
        # transformers' cache sizes itself by the encoder's layer count.
        use_cache=False).numpy()
  got = _greedy(model, params, jnp.asarray(SRC), jnp.asarray(SRC_MASK),
                steps)
  assert expected[:, 0].tolist() == [hf_t5_models.START] * len(SRC)
  np.testing.assert_array_equal(got, expected[:, 1:])
  assert len(np.unique(got)) > 2  # not a constant sequence


@pytest.mark.torch
def test_relative_position_bucket_matches_transformers():
  torch = _torch()
  from transformers.models.t5 import modeling_t5  # pylint: disable=g-import-not-at-top
  relative = np.arange(-400, 401)
  for bidirectional in (True, False):
    for buckets, distance in ((32, 128), (8, 12), (16, 20)):
      expected = modeling_t5.T5Attention._relative_position_bucket(  # pylint: disable=protected-access
          torch.as_tensor(relative), bidirectional=bidirectional,
          num_buckets=buckets, max_distance=distance).numpy()
      got = t5_layers.relative_position_bucket(
          jnp.asarray(relative), bidirectional=bidirectional,
          num_buckets=buckets, max_distance=distance)
      np.testing.assert_array_equal(np.asarray(got), expected)
      # Every bucket is used (bucket `buckets // 2`, "after, distance 0",
      # cannot be reached).
      assert len(np.unique(expected)) == buckets - bidirectional


@pytest.mark.torch
def test_mt5_loads_and_saves(tmp_path):
  import transformers  # pylint: disable=g-import-not-at-top
  hf_model = hf_t5_models.save_random_t5("mt5", tmp_path / "hf", _torch())
  model, params = networks.from_pretrained(tmp_path / "hf")
  assert model.config.model_type == "mt5" and not model.config.tie_embeddings
  expected = _hf_logits(hf_model, SRC, SRC_MASK, DEC, DEC_MASK)
  got = np.asarray(jax.jit(model.apply)(params, SRC, SRC_MASK, DEC, DEC_MASK))
  np.testing.assert_allclose(_masked(got, DEC_MASK),
                             _masked(expected, DEC_MASK), atol=1e-4, rtol=0)
  out = networks.save_pretrained(model, params, tmp_path / "ours")
  assert json.loads((out / "config.json").read_text())["architectures"] == [
      "MT5ForConditionalGeneration"]
  reloaded = transformers.AutoModelForSeq2SeqLM.from_pretrained(out).eval()
  assert type(reloaded).__name__ == "MT5ForConditionalGeneration"
  np.testing.assert_allclose(
      _masked(_hf_logits(reloaded, SRC, SRC_MASK, DEC, DEC_MASK), DEC_MASK),
      _masked(got, DEC_MASK), atol=1e-4, rtol=0)
