"""Tests for gkdrl.networks.checkpoint against Hugging Face PyTorch models."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy

from gkdrl import networks
from gkdrl.networks import hf_weights
from tests import conftest
from tests.networks import hf_models

B, L = 3, 7
MASK = np.array([[1] * L, [0, 0, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 1, 1]], bool)
TOKENS = np.random.default_rng(0).integers(0, hf_models.VOCAB_SIZE, (B, L))


@pytest.fixture(scope="module", params=hf_models.CONFIG_NAMES)
def hf_checkpoint(request, tmp_path_factory):
  """(name, directory, torch model) of one tiny random HF model."""
  torch = _torch_or_skip()
  directory = tmp_path_factory.mktemp(request.param)
  model = hf_models.save_random_hf_model(request.param, directory, torch)
  return request.param, directory, model


def _torch_or_skip():
  """torch, for module-scoped fixtures (conftest's `torch` is per test)."""
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    conftest.skip_or_fail("torch is not installed: pip install torch==2.13.0")
  return torch


@pytest.fixture(scope="module")
def loaded(hf_checkpoint):
  """Our model loaded from the HF directory, and its logits on TOKENS."""
  _, directory, _ = hf_checkpoint
  model, params = networks.from_pretrained(directory)
  apply = jax.jit(model.apply)
  return model, params, apply


@pytest.mark.torch
def test_logits_match_transformers_on_left_padded_batch(hf_checkpoint,
                                                         loaded):
  name, _, hf_model = hf_checkpoint
  model, params, apply = loaded
  assert model.config == hf_models.jax_config(name)
  expected = hf_models.hf_logits(hf_model, TOKENS, MASK, _torch_or_skip())
  got = np.asarray(apply(params, TOKENS, MASK))
  valid = MASK[..., None]
  assert np.abs(np.where(valid, expected, 0)).max() > 0.5  # not trivial
  np.testing.assert_allclose(np.where(valid, got, 0),
                             np.where(valid, expected, 0), atol=1e-4, rtol=0)


@pytest.mark.torch
def test_save_pretrained_reloads_in_transformers(hf_checkpoint, loaded,
                                                 tmp_path):
  import transformers  # pylint: disable=g-import-not-at-top
  torch = _torch_or_skip()
  model, params, apply = loaded
  out = networks.save_pretrained(model, params, tmp_path / "saved")
  hf_model = transformers.AutoModelForCausalLM.from_pretrained(out)
  hf_model.eval()
  expected = hf_models.hf_logits(hf_model, TOKENS, MASK, torch)
  got = np.asarray(apply(params, TOKENS, MASK))
  valid = MASK[..., None]
  np.testing.assert_allclose(np.where(valid, got, 0),
                             np.where(valid, expected, 0), atol=1e-4, rtol=0)
  generation = json.loads((out / "generation_config.json").read_text())
  assert generation["eos_token_id"] == model.config.eos_token_id
  # And back into JAX: identical parameters.
  _, reloaded = networks.from_pretrained(out)
  jax.tree.map(np.testing.assert_array_equal, reloaded, params)


def test_sharded_checkpoint_and_bfloat16(tmp_path):
  config = hf_models.jax_config("qwen2")
  model = networks.make_model(config)
  params = jax.jit(model.init)(jax.random.key(1))
  tensors = hf_weights.to_hf_tensors(config, params)
  names = sorted(tensors)
  shards = {"a.safetensors": names[::2], "b.safetensors": names[1::2]}
  for shard, shard_names in shards.items():
    safetensors.numpy.save_file({n: tensors[n] for n in shard_names},
                                str(tmp_path / shard))
  index = {"weight_map": {n: s for s, ns in shards.items() for n in ns}}
  (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
  (tmp_path / "config.json").write_text(json.dumps(config.to_hf_config()))
  _, loaded_params = networks.from_pretrained(tmp_path)
  jax.tree.map(np.testing.assert_array_equal, loaded_params, params)
  _, params16 = networks.from_pretrained(tmp_path, dtype=jnp.bfloat16)
  assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(params16))


def _write_checkpoint(directory, config, tensors):
  directory.mkdir(exist_ok=True)
  (directory / "config.json").write_text(json.dumps(config))
  if tensors is not None:
    safetensors.numpy.save_file(tensors, str(directory / "model.safetensors"))


@pytest.fixture(scope="module")
def gpt2_tensors():
  config = hf_models.jax_config("gpt2")
  params = jax.jit(networks.make_model(config).init)(jax.random.key(0))
  return config, hf_weights.to_hf_tensors(config, params)


def test_missing_path_names_it(tmp_path):
  missing = tmp_path / "no_such_model"
  with pytest.raises(FileNotFoundError, match="no_such_model"):
    networks.from_pretrained(missing)


def test_missing_config_and_weights_are_named(tmp_path, gpt2_tensors):
  config, _ = gpt2_tensors
  with pytest.raises(FileNotFoundError, match="config.json"):
    networks.from_pretrained(tmp_path)
  _write_checkpoint(tmp_path / "m", config.to_hf_config(), None)
  with pytest.raises(FileNotFoundError, match="model.safetensors"):
    networks.from_pretrained(tmp_path / "m")


def test_unknown_architecture_is_rejected(tmp_path, gpt2_tensors):
  _, tensors = gpt2_tensors
  _write_checkpoint(tmp_path, {"model_type": "mamba",
                               "architectures": ["MambaForCausalLM"]}, tensors)
  with pytest.raises(ValueError, match="mamba"):
    networks.from_pretrained(tmp_path)


def test_missing_tensor_is_named_with_expected_shape(tmp_path, gpt2_tensors):
  config, tensors = gpt2_tensors
  tensors = dict(tensors)
  del tensors["transformer.h.1.mlp.c_fc.weight"]
  _write_checkpoint(tmp_path, config.to_hf_config(), tensors)
  with pytest.raises(ValueError,
                     match=r"transformer\.h\.1\.mlp\.c_fc\.weight.*\(32, 128\)"):
    networks.from_pretrained(tmp_path)


def test_wrong_shape_names_file_tensor_and_expected_shape(tmp_path,
                                                          gpt2_tensors):
  config, tensors = gpt2_tensors
  tensors = dict(tensors)
  tensors["transformer.h.0.attn.c_attn.weight"] = np.zeros((32, 64),
                                                           np.float32)
  _write_checkpoint(tmp_path, config.to_hf_config(), tensors)
  with pytest.raises(ValueError) as info:
    networks.from_pretrained(tmp_path)
  message = str(info.value)
  assert "model.safetensors" in message
  assert "transformer.h.0.attn.c_attn.weight" in message
  assert "(32, 96)" in message and "(32, 64)" in message


@pytest.mark.parametrize("cut", ["half", "header", "eight"])
def test_truncated_safetensors_file_is_named_with_its_size(tmp_path,
                                                           gpt2_tensors,
                                                           cut):
  config, tensors = gpt2_tensors
  _write_checkpoint(tmp_path, config.to_hf_config(), tensors)
  weights = tmp_path / "model.safetensors"
  data = weights.read_bytes()
  header = 8 + int.from_bytes(data[:8], "little")
  keep = {"half": len(data) // 2, "header": header // 2, "eight": 5}[cut]
  weights.write_bytes(data[:keep])
  with pytest.raises(ValueError) as info:
    networks.from_pretrained(tmp_path)
  message = str(info.value)
  assert message.startswith(f"{weights}: truncated")
  if cut == "half":  # the header survives: it tells the full size
    assert (f"it is {keep:,} bytes, but its header describes {len(data):,} "
            "bytes") in message
  else:
    assert f"safetensors file of {keep:,} bytes" in message


def test_corrupt_safetensors_header_is_named(tmp_path, gpt2_tensors):
  config, tensors = gpt2_tensors
  _write_checkpoint(tmp_path, config.to_hf_config(), tensors)
  weights = tmp_path / "model.safetensors"
  data = bytearray(weights.read_bytes())
  data[8:16] = b"{garbage"
  weights.write_bytes(bytes(data))
  with pytest.raises(ValueError, match=rf"{weights}: truncated or corrupt "
                     r"safetensors file .*invalid JSON"):
    networks.from_pretrained(tmp_path)
