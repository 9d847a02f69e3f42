"""Tests for reading GGUF files (gkdrl.networks.gguf_io, from_pretrained)."""

import dataclasses

import gguf
import jax
import numpy as np
import pytest

from gkdrl import networks
from gkdrl.networks import gguf_io
from gkdrl.networks import hf_weights
from tests import conftest
from tests.networks import gguf_writer
from tests.networks import hf_models

B, L = 2, 6
MASK = np.array([[1] * L, [0, 0, 0, 1, 1, 1]], bool)
TOKENS = np.random.default_rng(1).integers(0, hf_models.VOCAB_SIZE, (B, L))
F16_TENSOR = "blk.0.ffn_down.weight"


@pytest.fixture(scope="module", params=hf_models.CONFIG_NAMES)
def gguf_file(request, tmp_path_factory):
  """(config, params, path) of a random tiny model written as GGUF."""
  config = hf_models.jax_config(request.param)
  params = jax.jit(networks.make_model(config).init)(jax.random.key(2))
  # Noise so that norms, biases and logits are not trivially 1, 0 and ~0.
  rng = np.random.default_rng(3)
  params = jax.tree.map(
      lambda x: x + 0.2 * rng.normal(size=x.shape).astype(np.float32), params)
  path = tmp_path_factory.mktemp("gguf") / f"{request.param}.gguf"
  gguf_writer.write_gguf(path, config,
                         hf_weights.to_hf_tensors(config, params),
                         f16=(F16_TENSOR,))
  return config, params, path


def test_reads_config_and_undoes_llama_cpp_layout(gguf_file):
  config, params, path = gguf_file
  model, loaded = networks.from_pretrained(path)
  # The writer stores no padding id, and epsilons as float32.
  assert model.config.norm_eps == pytest.approx(config.norm_eps, rel=1e-6)
  assert model.config == dataclasses.replace(
      config, pad_token_id=None, norm_eps=model.config.norm_eps)
  flat_expected = dict(jax.tree_util.tree_leaves_with_path(params))
  for key, value in jax.tree_util.tree_leaves_with_path(loaded):
    # One tensor went through float16.
    np.testing.assert_allclose(value, flat_expected[key], rtol=1e-3,
                               atol=1e-4, err_msg=jax.tree_util.keystr(key))


def test_unpermute_inverts_llama_cpp_permute():
  rng = np.random.default_rng(0)
  for n_heads, head_dim, extra in ((3, 8, (5,)), (2, 4, ())):
    weight = rng.normal(size=(n_heads * head_dim, *extra))
    permuted = gguf_writer.llama_cpp_permute(weight, n_heads)
    assert not np.array_equal(permuted, weight)
    np.testing.assert_array_equal(
        gguf_io.unpermute_rope_rows(permuted, n_heads), weight)


@pytest.mark.torch
def test_logits_match_transformers_gguf_reader(gguf_file):
  """transformers' own GGUF reader (names, un-permutation) is the reference.

  `AutoModelForCausalLM.from_pretrained(gguf_file=...)` needs accelerate, so
  we call the reader it uses and load its state dict ourselves.
  """
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    conftest.skip_or_fail("torch is not installed: pip install torch==2.13.0")
  import transformers  # pylint: disable=g-import-not-at-top
  from transformers import modeling_gguf_pytorch_utils as hf_gguf  # pylint: disable=g-import-not-at-top
  _, _, path = gguf_file
  hf_config = hf_gguf.load_gguf_checkpoint(str(path))["config"]
  if "n_ctx" in hf_config:  # transformers maps GPT-2's context_length there.
    hf_config["n_positions"] = hf_config["n_ctx"]
  hf_model = transformers.AutoModelForCausalLM.from_config(
      transformers.AutoConfig.for_model(**hf_config))
  tensors = hf_gguf.load_gguf_checkpoint(
      str(path), return_tensors=True, model_to_load=hf_model)["tensors"]
  result = hf_model.load_state_dict(
      {k: torch.as_tensor(v) for k, v in tensors.items()}, strict=False)
  assert set(result.missing_keys) <= {"lm_head.weight"}  # tied
  hf_model.eval()
  expected = hf_models.hf_logits(hf_model, TOKENS, MASK, torch)
  model, params = networks.from_pretrained(path)
  got = np.asarray(jax.jit(model.apply)(params, TOKENS, MASK))
  valid = MASK[..., None]
  assert np.abs(np.where(valid, expected, 0)).max() > 0.5  # not trivial
  np.testing.assert_allclose(np.where(valid, got, 0),
                             np.where(valid, expected, 0), atol=1e-4, rtol=0)


def test_unknown_architecture_and_missing_tensor(tmp_path):
  path = tmp_path / "mamba.gguf"
  writer = gguf.GGUFWriter(str(path), "mamba")
  writer.add_uint32("mamba.block_count", 1)
  writer.add_tensor("token_embd.weight", np.zeros((4, 2), np.float32))
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()
  with pytest.raises(ValueError, match=r"mamba\.gguf.*'mamba'"):
    networks.from_pretrained(path)

  config = hf_models.jax_config("llama_gqa_tied")
  params = jax.jit(networks.make_model(config).init)(jax.random.key(0))
  tensors = hf_weights.to_hf_tensors(config, params)
  del tensors["model.layers.1.mlp.up_proj.weight"]
  path = tmp_path / "broken.gguf"
  gguf_writer.write_gguf(path, config, tensors)
  with pytest.raises(ValueError, match=r"broken\.gguf.*up_proj.*\(48, 32\)"):
    networks.from_pretrained(path)
