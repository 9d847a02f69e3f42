"""Tests for gkdrl.networks.decoding: the prepared, unrolled decode step."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gkdrl import networks
from gkdrl.networks import decoding
from tests.networks import hf_models

B, P, T = 3, 5, 4
PROMPT_MASK = np.array([[1] * P, [0, 0, 1, 1, 1], [0, 0, 0, 0, 1]], bool)


# Every family switch: LayerNorm, learned positions, biases and a plain GELU
# MLP (gpt2); rotary, GQA, untied head_dim != D / H (llama); qkv biases with
# one key/value head (qwen2).
@pytest.fixture(scope="module",
                params=["gpt2", "llama_gqa_untied", "qwen2"])
def model_and_params(request):
  model = networks.make_model(hf_models.jax_config(request.param))
  return model, jax.jit(model.init)(jax.random.key(0))


def _run(model, params, tokens, fast):
  """Prefill then T decode steps; the prepared forms when `fast`."""
  cache = model.init_cache(B, P + T + 2)
  logits, cache = model.prefill(params, tokens[:, :P], PROMPT_MASK, cache)
  if fast:
    params = model.prepare_decode(params)
    cache = model.unstack_cache(cache)
  steps = [logits[:, -1]]
  for t in range(T):
    step_logits, cache = model.decode(params, tokens[:, P + t], cache)
    steps.append(step_logits)
  return jnp.stack(steps, 1), cache


def test_prepared_decode_equals_stacked_decode(model_and_params):
  model, params = model_and_params
  tokens = jax.random.randint(jax.random.key(1), (B, P + T), 0,
                              model.config.vocab_size)
  run = jax.jit(_run, static_argnums=(0, 3))
  expected, expected_cache = run(model, params, tokens, False)
  got, cache = run(model, params, tokens, True)
  assert isinstance(cache.keys, tuple) and len(cache.keys) == (
      model.config.n_layers)
  chex.assert_shape(cache.keys[0], expected_cache.keys.shape[1:])
  np.testing.assert_allclose(got, expected, atol=2e-5, rtol=0)
  cache = model.stack_cache(cache)
  for name in ("keys", "values"):
    np.testing.assert_allclose(getattr(cache, name),
                               getattr(expected_cache, name), atol=2e-5)
  for name in ("mask", "index", "next_positions"):
    np.testing.assert_array_equal(getattr(cache, name),
                                  getattr(expected_cache, name))


def test_each_form_of_cache_is_returned_as_given(model_and_params):
  model, params = model_and_params
  fast = model.prepare_decode(params)
  tokens = jnp.ones((B,), jnp.int32)
  stacked = model.init_cache(B, 4)
  logits, cache = jax.jit(model.decode)(fast, tokens, stacked)
  chex.assert_shape(cache.keys, stacked.keys.shape)
  # Plain parameters with a per-layer cache take the unrolled path too.
  per_layer = model.unstack_cache(stacked)
  logits_plain, cache = jax.jit(model.decode)(params, tokens, per_layer)
  assert isinstance(cache.values, tuple)
  np.testing.assert_allclose(logits_plain, logits, atol=2e-5, rtol=0)
  # prefill on a per-layer cache: a chunked prompt after decoding.
  _, cache = jax.jit(model.prefill)(params, jnp.ones((B, 2), jnp.int32),
                                    jnp.ones((B, 2), bool), cache)
  assert isinstance(cache.keys, tuple) and int(cache.index) == 3


def test_prepare_transposes_every_matrix(model_and_params):
  model, params = model_and_params
  fast = decoding.prepare(model.config, params)
  assert len(fast.layers) == model.config.n_layers
  # Query, key and value are one [(H + 2 K) Dh, D] product per layer.
  w = np.concatenate([params[f"lm/layers/attention/{name}"]["w"][1].T
                      for name in ("query", "key", "value")])
  np.testing.assert_array_equal(fast.layers[1]["attention/qkv"]["w"], w)
  if model.config.qkv_bias:
    np.testing.assert_array_equal(
        fast.layers[1]["attention/qkv"]["b"],
        np.concatenate([params[f"lm/layers/attention/{name}"]["b"][1]
                        for name in ("query", "key", "value")]))
  assert "attention/query" not in fast.layers[1]
  w = params["lm/layers/mlp/down"]["w"]  # [N, F, D]
  np.testing.assert_array_equal(fast.layers[1]["mlp/down"]["w"], w[1].T)
  np.testing.assert_array_equal(fast.unembed.T, model.unembedding(params))
  with pytest.raises(TypeError, match="prefill"):
    model.prefill(fast, jnp.ones((B, 2), jnp.int32), jnp.ones((B, 2), bool),
                  model.init_cache(B, 4))
