"""Tests for gkdrl.networks.t5_decoding: T5's prepared, unrolled decode."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gkdrl import networks
from gkdrl.networks import t5_decoding

V = 53
SRC_MASK = np.array([[1] * 7, [1] * 3 + [0] * 4, [0] * 2 + [1] * 5], bool)
SRC = np.where(SRC_MASK, np.random.default_rng(0).integers(2, V, (3, 7)), 0)
# Row 1's decoder prefix is left-padded: its bias and mask must follow.
DEC_MASK = np.array([[1] * 8, [0, 1] + [1] * 6, [1] * 8], bool)
DEC = np.where(DEC_MASK, np.random.default_rng(1).integers(2, V, (3, 8)), 0)
PREFIX = 2


@pytest.fixture(scope="module", params=[False, True], ids=["v1_0", "v1_1"])
def model_and_params(request):
  gated = request.param
  config = networks.T5Config(
      vocab_size=V, d_model=16, n_layers=1, n_decoder_layers=2, n_heads=2,
      head_dim=6, d_ff=20, activation="gelu_new" if gated else "relu",
      gated_mlp=gated, relative_buckets=8, relative_max_distance=6,
      tie_embeddings=not gated)
  model = networks.make_t5(config)
  return model, jax.jit(model.init)(jax.random.key(2))


def _run(model, params, fast):
  """Prefill PREFIX decoder tokens, then decode the rest one at a time."""
  cache = model.init_cache(3, DEC.shape[1] + 1, SRC.shape[1])
  logits, cache = model.prefill(params, SRC, SRC_MASK, DEC[:, :PREFIX],
                                DEC_MASK[:, :PREFIX], cache)
  if fast:
    params = model.prepare_decode(params)
    cache = model.unstack_cache(cache)
  steps = [logits]
  for t in range(PREFIX, DEC.shape[1]):
    step, cache = model.decode(params, jnp.asarray(DEC[:, t]), cache)
    steps.append(step[:, None])
  return jnp.concatenate(steps, axis=1), cache


def test_prepared_decode_equals_stacked_decode_and_apply(model_and_params):
  model, params = model_and_params
  run = jax.jit(_run, static_argnums=(0, 2))
  expected, expected_cache = run(model, params, False)
  got, cache = run(model, params, True)
  assert isinstance(cache.keys, tuple) and len(cache.cross_values) == 2
  np.testing.assert_allclose(got, expected, atol=2e-5, rtol=0)
  applied = jax.jit(model.apply)(params, SRC, SRC_MASK, DEC, DEC_MASK)
  real = DEC_MASK[..., None]
  np.testing.assert_allclose(np.where(real, got, 0),
                             np.where(real, applied, 0), atol=2e-5, rtol=0)
  cache = model.stack_cache(cache)
  for name in ("keys", "values", "cross_keys", "cross_values"):
    np.testing.assert_allclose(getattr(cache, name),
                               getattr(expected_cache, name), atol=2e-5)
  for name in ("mask", "index", "source_mask"):
    np.testing.assert_array_equal(getattr(cache, name),
                                  getattr(expected_cache, name))


def test_each_form_of_cache_is_returned_as_given(model_and_params):
  model, params = model_and_params
  stacked = model.init_cache(3, 4, SRC.shape[1])
  _, stacked = jax.jit(model.prefill)(params, SRC, SRC_MASK,
                                      DEC[:, :1], None, stacked)
  tokens = jnp.asarray(DEC[:, 1])
  fast = model.prepare_decode(params)
  logits, cache = jax.jit(model.decode)(fast, tokens, stacked)
  assert cache.keys.shape == stacked.keys.shape
  per_layer = model.unstack_cache(stacked)
  logits_plain, cache = jax.jit(model.decode)(params, tokens, per_layer)
  assert isinstance(cache.values, tuple)
  np.testing.assert_allclose(logits_plain, logits, atol=2e-5, rtol=0)
  # prefill on a per-layer cache keeps it per layer.
  _, cache = jax.jit(model.prefill)(params, SRC, SRC_MASK, DEC[:, :2], None,
                                    model.unstack_cache(
                                        model.init_cache(3, 4, SRC.shape[1])))
  assert isinstance(cache.cross_keys, tuple) and int(cache.index) == 2
  with pytest.raises(TypeError, match="prefill takes the model's"):
    model.prefill(fast, SRC, SRC_MASK, DEC[:, :1], None, stacked)


def test_prepare_joins_and_transposes_the_decoder_weights(model_and_params):
  model, params = model_and_params
  fast = t5_decoding.prepare(model.config, params)
  assert len(fast.layers) == 2
  stacked = "t5/decoder/layers/self_attention/"
  qkv = np.concatenate([params[stacked + n]["w"][1].T
                        for n in ("query", "key", "value")], axis=0)
  np.testing.assert_array_equal(fast.layers[1]["self_attention/qkv"], qkv)
  np.testing.assert_array_equal(
      fast.layers[1]["mlp/down"],
      params["t5/decoder/layers/mlp/down"]["w"][1].T)
  assert ("mlp/gate_up" in fast.layers[0]) == model.config.gated_mlp
  # The encoder's weights are not part of the decode step.
  n_weights = sum(x.size for x in jax.tree.leaves(fast.layers))
  n_decoder = sum(x.size for k, v in params.items()
                  if k.startswith("t5/decoder/layers")
                  for x in jax.tree.leaves(v))
  assert n_weights == n_decoder
