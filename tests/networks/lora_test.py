"""Tests for gkdrl.networks.lora: merge maths, counts and the PEFT layout."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy

from gkdrl import networks
from gkdrl.networks import lora
from tests.networks import hf_models

RANK, ALPHA = 3, 6.0
B, L = 2, 5
TOKENS = np.random.default_rng(0).integers(0, hf_models.VOCAB_SIZE, (B, L))
MASK = np.ones((B, L), bool)


@pytest.fixture(scope="module")
def qwen2():
  """(model, params, trained-looking adapters) of a tiny Qwen2 model."""
  model = networks.make_model(hf_models.jax_config("qwen2"))
  params = model.init(jax.random.key(0))
  adapters = lora.init_adapters(jax.random.key(1), params, rank=RANK)
  # Non-zero b, as after training.
  adapters = jax.tree.map(
      lambda x: x + 0.05 * jax.random.normal(jax.random.key(2), x.shape),
      adapters)
  return model, params, adapters


def _numpy_merge(params, adapters):
  """w + alpha/r a @ b in float64 NumPy, per layer."""
  merged = jax.tree.map(lambda x: np.asarray(x, np.float64), params)
  for module, ab in adapters.items():
    a, b = np.asarray(ab["a"], np.float64), np.asarray(ab["b"], np.float64)
    for i in range(a.shape[0]):
      merged[module]["w"][i] += ALPHA / RANK * a[i] @ b[i]
  return merged


def test_initial_adapters_leave_the_model_unchanged(qwen2):
  model, params, _ = qwen2
  adapters = lora.init_adapters(jax.random.key(1), params, rank=RANK)
  module = lora.TARGET_MODULES["query"]
  assert np.abs(np.asarray(adapters[module]["a"])).max() > 0
  merged = lora.merge(params, adapters, alpha=ALPHA, rank=RANK)
  jax.tree.map(np.testing.assert_array_equal, merged, params)


def test_merge_matches_float64_numpy(qwen2):
  _, params, adapters = qwen2
  merged = lora.merge(params, adapters, alpha=ALPHA, rank=RANK)
  expected = _numpy_merge(params, adapters)
  jax.tree.map(lambda g, e: np.testing.assert_allclose(g, e, atol=1e-6),
               merged, expected)
  # Every default target changed; the norms did not.
  for module in adapters:
    assert not np.allclose(merged[module]["w"], params[module]["w"])
  np.testing.assert_array_equal(merged["lm/final_norm"]["scale"],
                                params["lm/final_norm"]["scale"])


def test_merged_forward_equals_base_plus_adapters(qwen2):
  model, params, adapters = qwen2
  merged = lora.merge(params, adapters, alpha=ALPHA, rank=RANK)
  reference = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32),
                           _numpy_merge(params, adapters))
  got = model.apply(merged, TOKENS, MASK)
  want = model.apply(reference, TOKENS, MASK)
  base = model.apply(params, TOKENS, MASK)
  assert np.abs(np.asarray(got - base)).max() > 1e-3  # adapters matter
  np.testing.assert_allclose(got, want, atol=1e-5)


def test_bfloat16_base_merges_in_float32(qwen2):
  _, params, adapters = qwen2
  base16 = jax.tree.map(lambda x: x.astype(jnp.bfloat16), params)
  merged = lora.merge(base16, adapters, alpha=ALPHA, rank=RANK)
  assert {x.dtype for x in jax.tree.leaves(merged)} == {jnp.dtype("float32")}
  expected = _numpy_merge(base16, adapters)
  jax.tree.map(lambda g, e: np.testing.assert_allclose(g, e, atol=1e-6),
               merged, expected)


def test_trainable_count_is_what_the_rank_says(qwen2):
  _, params, _ = qwen2
  config = hf_models.jax_config("qwen2")
  d, f = config.d_model, config.d_ff
  q, kv = config.n_heads * config.head_dim, config.n_kv_heads * config.head_dim
  sizes = {"query": (d, q), "key": (d, kv), "value": (d, kv), "out": (q, d),
           "gate": (d, f), "up": (d, f), "down": (f, d)}
  for targets in (lora.DEFAULT_TARGETS, ("query", "value")):
    adapters = lora.init_adapters(jax.random.key(0), params, rank=RANK,
                                  targets=targets)
    expected = config.n_layers * sum(RANK * (sizes[t][0] + sizes[t][1])
                                     for t in targets)
    assert lora.num_parameters(adapters) == expected
    assert len(adapters) == len(targets)


def test_targets_a_model_lacks_are_skipped():
  model = networks.make_model(hf_models.jax_config("gpt2"))
  params = model.init(jax.random.key(0))
  adapters = lora.init_adapters(jax.random.key(0), params, rank=2)
  assert lora.TARGET_MODULES["gate"] not in adapters
  assert lora.TARGET_MODULES["up"] in adapters
  with pytest.raises(ValueError, match="lora_targets"):
    lora.init_adapters(jax.random.key(0), params, rank=2, targets=("gate",))


@pytest.mark.parametrize("targets", [(), ("q_proj",), ("query", "query")])
def test_bad_targets_are_named(targets):
  with pytest.raises(ValueError, match="lora_targets=.* is not allowed"):
    lora.check_targets(targets)


def test_peft_files_hold_the_adapters_in_peft_layout(qwen2, tmp_path):
  model, _, adapters = qwen2
  out = lora.save_adapters(model, adapters, tmp_path / "peft", rank=RANK,
                           alpha=ALPHA, base_model="base")
  config = json.loads((out / "adapter_config.json").read_text())
  assert (config["peft_type"], config["r"], config["lora_alpha"]) == (
      "LORA", RANK, ALPHA)
  assert sorted(config["target_modules"]) == sorted(
      ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
       "down_proj"])
  tensors = safetensors.numpy.load_file(str(out / "adapter_model.safetensors"))
  n_layers = model.config.n_layers
  assert len(tensors) == 2 * 7 * n_layers
  stem = "base_model.model.model.layers.1.self_attn.q_proj"
  a, b = tensors[f"{stem}.lora_A.weight"], tensors[f"{stem}.lora_B.weight"]
  d, q = model.config.d_model, model.config.n_heads * model.config.head_dim
  assert a.shape == (RANK, d) and b.shape == (q, RANK)
  # torch's delta W [out, in] = scale * B @ A is our delta transposed.
  ours = lora.delta(adapters[lora.TARGET_MODULES["query"]], ALPHA / RANK)[1]
  np.testing.assert_allclose(ALPHA / RANK * b @ a, np.asarray(ours).T,
                             atol=1e-6)


@pytest.mark.torch
def test_peft_adapters_applied_in_torch_give_the_merged_logits(qwen2,
                                                               tmp_path,
                                                               torch):
  """Adds scale * B @ A to each PEFT target of the transformers model."""
  import transformers  # pylint: disable=g-import-not-at-top
  model, params, adapters = qwen2
  base_dir = networks.save_pretrained(model, params, tmp_path / "base")
  out = lora.save_adapters(model, adapters, tmp_path / "peft", rank=RANK,
                           alpha=ALPHA)
  hf_model = transformers.AutoModelForCausalLM.from_pretrained(base_dir)
  hf_model.eval()
  tensors = safetensors.numpy.load_file(str(out / "adapter_model.safetensors"))
  weights = dict(hf_model.named_parameters())
  with torch.no_grad():
    for name in tensors:
      if name.endswith(".lora_A.weight"):
        stem = name[:-len(".lora_A.weight")]
        a = torch.from_numpy(tensors[name])
        b = torch.from_numpy(tensors[stem + ".lora_B.weight"])
        target = stem.removeprefix("base_model.model.") + ".weight"
        weights[target].add_(ALPHA / RANK * b @ a)
  expected = hf_models.hf_logits(hf_model, TOKENS, MASK, torch)
  merged = lora.merge(params, adapters, alpha=ALPHA, rank=RANK)
  got = np.asarray(model.apply(merged, TOKENS, MASK))
  np.testing.assert_allclose(got, expected, atol=1e-4)


def test_gpt2_has_no_peft_layout():
  model = networks.make_model(hf_models.jax_config("gpt2"))
  adapters = lora.init_adapters(jax.random.key(0), model.init(
      jax.random.key(0)), rank=2)
  with pytest.raises(ValueError, match="model_type='gpt2' is not allowed"):
    lora.to_peft_tensors(model.config, adapters)
