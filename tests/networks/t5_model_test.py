"""Tests of gkdrl.networks' T5 that need no PyTorch: cache, padding, remat
and unroll, config, loading errors and the tokenizer."""

import importlib.util
import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tokenizers
from tokenizers import decoders
from tokenizers import models
from tokenizers import pre_tokenizers
import transformers

from gkdrl import networks

V = 61


def _config(gated: bool) -> networks.T5Config:
  return networks.T5Config(
      vocab_size=V, d_model=16, n_layers=2, n_decoder_layers=1, n_heads=2,
      head_dim=5, d_ff=24, activation="gelu_new" if gated else "relu",
      gated_mlp=gated, relative_buckets=8, relative_max_distance=10,
      tie_embeddings=not gated)


@pytest.fixture(scope="module", params=[False, True], ids=["v1_0", "v1_1"])
def model_and_params(request):
  model = networks.make_t5(_config(request.param))
  return model, jax.jit(model.init)(jax.random.key(1))


SRC_MASK = np.array([[1] * 9, [1] * 4 + [0] * 5, [0] * 3 + [1] * 6], bool)
SRC = np.where(SRC_MASK, np.random.default_rng(0).integers(2, V, (3, 9)), 0)
DEC_MASK = np.array([[1] * 6, [0, 0] + [1] * 4, [1] * 6], bool)
DEC = np.where(DEC_MASK, np.random.default_rng(1).integers(2, V, (3, 6)), 0)


def test_prefill_and_decode_match_apply(model_and_params):
  model, params = model_and_params
  expected = jax.jit(model.apply)(params, SRC, SRC_MASK, DEC, DEC_MASK)
  cache = model.init_cache(3, 6, 9)
  logits, cache = jax.jit(model.prefill)(params, SRC, SRC_MASK, DEC[:, :3],
                                         DEC_MASK[:, :3], cache)
  got, decode = [logits], jax.jit(model.decode)
  for t in range(3, 6):
    step, cache = decode(params, jnp.asarray(DEC[:, t]), cache)
    got.append(step[:, None])
  got = np.concatenate(got, axis=1)
  np.testing.assert_allclose(np.where(DEC_MASK[..., None], got, 0),
                             np.where(DEC_MASK[..., None], expected, 0),
                             atol=1e-5, rtol=0)
  assert int(cache.index) == 6 and cache.mask.tolist() == DEC_MASK.tolist()


def test_padding_leaves_real_logits_unchanged(model_and_params):
  model, params = model_and_params
  apply = jax.jit(model.apply)
  padded = apply(params, SRC, SRC_MASK, DEC, DEC_MASK)
  for row in range(3):
    src = SRC[row, SRC_MASK[row]][None]
    dec = DEC[row, DEC_MASK[row]][None]
    alone = apply(params, src, None, dec)
    np.testing.assert_allclose(padded[row, DEC_MASK[row]], alone[0],
                               atol=1e-5, rtol=0)


def test_hidden_times_unembedding_is_apply(model_and_params):
  model, params = model_and_params
  hidden = jax.jit(model.hidden)(params, SRC, SRC_MASK, DEC, DEC_MASK)
  np.testing.assert_allclose(
      hidden @ model.unembedding(params),
      jax.jit(model.apply)(params, SRC, SRC_MASK, DEC, DEC_MASK), atol=1e-5,
      rtol=0)


@pytest.mark.slow
def test_remat_keeps_values_and_gradients(model_and_params):
  model, params = model_and_params

  def loss(params, remat):
    logits = model.apply(params, SRC, SRC_MASK, DEC, DEC_MASK,
                         remat=remat or "none", unroll=remat is None)
    return jnp.sum(jnp.where(DEC_MASK[..., None], logits, 0) ** 2)

  grad = jax.jit(jax.grad(loss), static_argnums=1)
  # None: no remat, encoder and decoder layers unrolled.
  grads = {m: grad(params, m) for m in networks.REMAT_MODES + (None,)}
  # The encoder is differentiated through the cross-attention.
  encoder_grad = grads["none"]["t5/encoder/layers/self_attention/query"]["w"]
  assert np.abs(encoder_grad).max() > 0
  for mode in ("dots", "full", None):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4,
                                                         atol=1e-5),
                 grads[mode], grads["none"])
  with pytest.raises(ValueError, match=r"remat='fast' is not allowed"):
    model.apply(params, SRC, SRC_MASK, DEC, DEC_MASK, remat="fast")


def test_config_round_trip_and_validation():
  for gated in (False, True):
    config = _config(gated)
    assert networks.T5Config.from_hf_config(config.to_hf_config()) == config
  assert _config(True).to_hf_config()["feed_forward_proj"] == "gated-gelu"
  assert _config(False).scale_decoder_outputs
  with pytest.raises(ValueError, match=r"n_heads=0 is not allowed"):
    networks.T5Config(vocab_size=V, d_model=8, n_layers=1, n_heads=0,
                      head_dim=4, d_ff=8)
  with pytest.raises(ValueError, match=r"eos_token_id=61 is not allowed"):
    networks.T5Config(vocab_size=V, d_model=8, n_layers=1, n_heads=1,
                      head_dim=4, d_ff=8, eos_token_id=V)
  with pytest.raises(ValueError, match=r"scale_decoder_outputs=True is not "
                     r"allowed; model_type='mt5' has no output scaling"):
    networks.T5Config(model_type="mt5", vocab_size=V, d_model=8, n_layers=1,
                      n_heads=1, head_dim=4, d_ff=8, scale_decoder_outputs=True)
  assert not networks.T5Config(
      model_type="mt5", vocab_size=V, d_model=8, n_layers=1, n_heads=1,
      head_dim=4, d_ff=8).scale_decoder_outputs
  with pytest.raises(ValueError, match=r"feed_forward_proj='gated-tanh'"):
    networks.T5Config.from_hf_config(dict(
        _config(True).to_hf_config(), feed_forward_proj="gated-tanh"))


def test_unknown_encoder_decoder_type_is_rejected(tmp_path):
  (tmp_path / "config.json").write_text(json.dumps(
      {"model_type": "bart", "is_encoder_decoder": True}))
  with pytest.raises(ValueError, match=r"model_type='bart' is not allowed; "
                     r"supported encoder-decoder types: 't5', 'mt5'"):
    networks.from_pretrained(tmp_path)


def test_missing_tensor_is_named(tmp_path, model_and_params):
  model, params = model_and_params
  networks.save_pretrained(model, params, tmp_path)
  from safetensors import numpy as st  # pylint: disable=g-import-not-at-top
  tensors = st.load_file(str(tmp_path / "model.safetensors"))
  del tensors["decoder.block.0.layer.1.EncDecAttention.k.weight"]
  st.save_file(tensors, str(tmp_path / "model.safetensors"))
  with pytest.raises(ValueError, match=r"missing tensor 'decoder.block.0."
                     r"layer.1.EncDecAttention.k.weight' \(expected shape "
                     r"\(10, 16\)\)"):
    networks.from_pretrained(tmp_path)


def _tiny_t5_tokenizer():
  """A T5 tokenizer built offline: a small Unigram vocabulary."""
  pieces = ["▁the", "▁cat", "▁sat", "▁on", "▁mat", "▁", "t", "h", "e", "c",
            "a", "s", "o", "n", "m"]
  vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [
      (p, -1.0 - 0.1 * i) for i, p in enumerate(pieces)]
  backend = tokenizers.Tokenizer(models.Unigram(vocab, unk_id=2))
  backend.pre_tokenizer = pre_tokenizers.Metaspace()
  backend.decoder = decoders.Metaspace()
  return transformers.T5TokenizerFast(
      tokenizer_object=backend, eos_token="</s>", pad_token="<pad>",
      unk_token="<unk>", extra_ids=0)


def test_t5_directory_with_tokenizer_loads_without_torch(tmp_path,
                                                         model_and_params):
  model, params = model_and_params
  tokenizer = _tiny_t5_tokenizer()
  networks.save_pretrained(model, params, tmp_path, tokenizer=tokenizer)
  loaded = networks.load_tokenizer(tmp_path)
  ids = loaded("the cat sat on the mat").input_ids
  assert ids == [3, 4, 5, 6, 3, 7, 1]  # pieces, then </s>
  assert loaded.decode(ids, skip_special_tokens=True) == (
      "the cat sat on the mat")
  assert (loaded.eos_token_id, loaded.pad_token_id) == (1, 0)
  # transformers imports torch whenever it is installed; hiding it shows
  # that neither the model nor the tokenizer needs it.
  script = (
      "import sys; sys.modules['torch'] = None; "
      "from gkdrl import networks; "
      f"m, p = networks.from_pretrained({str(tmp_path)!r}); "
      f"t = networks.load_tokenizer({str(tmp_path)!r}); "
      "assert m.is_encoder_decoder and t.eos_token_id == 1; "
      "print(t('the cat').input_ids)")
  out = subprocess.run([sys.executable, "-c", script], check=True,
                       capture_output=True, text=True)
  assert out.stdout.strip() == "[3, 4, 1]"


def test_sentencepiece_only_directory_names_the_missing_package(tmp_path):
  if importlib.util.find_spec("sentencepiece") is not None:
    pytest.skip("sentencepiece is installed: the directory would load")
  (tmp_path / "spiece.model").write_bytes(b"")
  with pytest.raises(ValueError, match=r"only a SentencePiece model "
                     r"\(spiece.model, no tokenizer.json\); converting it "
                     r"needs `pip install sentencepiece`"):
    networks.load_tokenizer(tmp_path)


def test_head_tying_follows_the_checkpoint(tmp_path, caplog):
  from safetensors import numpy as st  # pylint: disable=g-import-not-at-top
  model = networks.make_t5(_config(False))  # v1.0: tied and scaled
  params = model.init(jax.random.key(2))
  networks.save_pretrained(model, params, tmp_path)
  path = str(tmp_path / "model.safetensors")
  tensors = st.load_file(path)
  assert "lm_head.weight" not in tensors
  # Older checkpoints repeat the shared table under three more names.
  for name in ("lm_head.weight", "encoder.embed_tokens.weight",
               "decoder.embed_tokens.weight"):
    tensors[name] = tensors["shared.weight"]
  st.save_file(tensors, path)
  loaded, _ = networks.from_pretrained(tmp_path)
  assert loaded.config == model.config and "ignoring" not in caplog.text
  # A head that differs from the shared table is untied; the scaling stays.
  tensors["lm_head.weight"] = tensors["shared.weight"] * 2
  st.save_file(tensors, path)
  loaded, loaded_params = networks.from_pretrained(tmp_path)
  assert not loaded.config.tie_embeddings
  assert loaded.config.scale_decoder_outputs
  np.testing.assert_array_equal(loaded.unembedding(loaded_params),
                                2 * model.unembedding(params))
