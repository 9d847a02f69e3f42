"""Tests for gkdrl.networks.model: padding, KV cache, dtypes, compile-once."""

import dataclasses
from typing import Callable, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gkdrl import networks
from tests.networks import hf_models

B, P, T = 3, 6, 4
PROMPT_MASK = np.array([[1] * P, [0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 0, 1]], bool)


class Jitted(NamedTuple):
  apply: Callable
  prefill: Callable
  decode: Callable


@pytest.fixture(scope="module", params=["gpt2", "llama_gqa_untied"])
def model_and_params(request):
  config = hf_models.jax_config(request.param)
  model = networks.make_model(config)
  return model, jax.jit(model.init)(jax.random.key(0))


@pytest.fixture(scope="module")
def jitted(model_and_params):
  """Jitted functions shared by the tests so each shape compiles once."""
  model, _ = model_and_params
  return Jitted(jax.jit(model.apply), jax.jit(model.prefill),
                jax.jit(chex.assert_max_traces(model.decode, n=1)))


def _tokens(vocab_size, length, seed=1):
  return jax.random.randint(jax.random.key(seed), (B, length), 0, vocab_size)


def _right_padded(tokens, mask):
  """Moves each row's real tokens to the front (positions 0, 1, ...)."""
  order = np.argsort(~np.asarray(mask), axis=1, kind="stable")
  return np.take_along_axis(np.asarray(tokens), order, axis=1)


def test_padding_does_not_change_valid_logits(model_and_params, jitted):
  model, params = model_and_params
  tokens = _tokens(model.config.vocab_size, P)
  apply = jitted.apply
  logits = apply(params, tokens, PROMPT_MASK)
  chex.assert_shape(logits, (B, P, model.config.vocab_size))
  assert logits.dtype == jnp.float32
  assert np.all(np.isfinite(logits))
  # With causal attention, the real tokens moved to the front of a row and
  # followed by junk are an unpadded sequence; one call checks every row.
  unpadded = apply(params, _right_padded(tokens, PROMPT_MASK),
                   np.ones_like(PROMPT_MASK))
  for row in range(B):
    n = int(PROMPT_MASK[row].sum())
    np.testing.assert_allclose(logits[row, P - n:], unpadded[row, :n],
                               atol=1e-5, rtol=1e-5)


def test_hidden_times_unembedding_is_logits(model_and_params, jitted):
  model, params = model_and_params
  tokens = _tokens(model.config.vocab_size, P)
  hidden = jax.jit(model.hidden)(params, tokens, PROMPT_MASK)
  chex.assert_shape(hidden, (B, P, model.config.d_model))
  unembedding = model.unembedding(params)
  chex.assert_shape(unembedding, (model.config.d_model,
                                  model.config.vocab_size))
  np.testing.assert_allclose(hidden @ unembedding,
                             jitted.apply(params, tokens, PROMPT_MASK),
                             atol=1e-5, rtol=1e-5)


# Prompt then completion, each row's completion right-padded.
COMPLETION_MASK = np.array([[1] * T, [1, 1, 0, 0], [1, 0, 0, 0]], bool)
FULL_MASK = np.concatenate([PROMPT_MASK, COMPLETION_MASK], axis=1)


@pytest.mark.parametrize("unroll", [False, True])
def test_last_positions_match_the_full_pass(model_and_params, unroll):
  model, params = model_and_params
  tokens = _tokens(model.config.vocab_size, P + T)
  hidden = jax.jit(model.hidden, static_argnames=("last", "unroll"))
  full = hidden(params, tokens, FULL_MASK)
  for last in (0, 1, T + 1, P + T):
    part = hidden(params, tokens, FULL_MASK, last=last, unroll=unroll)
    chex.assert_shape(part, (B, last, model.config.d_model))
    np.testing.assert_allclose(part, full[:, P + T - last:], atol=1e-5,
                               rtol=1e-5)
  logits = jax.jit(model.apply, static_argnames=("last", "unroll"))(
      params, tokens, FULL_MASK, last=T, unroll=unroll)
  np.testing.assert_allclose(logits, full[:, -T:] @ model.unembedding(params),
                             atol=1e-5, rtol=1e-5)


def test_last_positions_copy_no_weights_in_the_scan():
  # Taking the last layer out of the stack would copy the other layers'
  # weights into the scan's input: about 3/4 of them here.
  config = networks.ModelConfig(vocab_size=256, d_model=128, n_layers=4,
                                n_heads=4, n_kv_heads=2, d_ff=256)
  model = networks.make_model(config)
  params = jax.eval_shape(model.init, jax.random.key(0))
  layer_bytes = sum(x.size * x.dtype.itemsize for name, module in
                    params.items() if name.startswith(networks.model.LAYERS)
                    for x in module.values())
  tokens = jax.ShapeDtypeStruct((B, P + T), jnp.int32)

  def scratch(last):
    fn = jax.jit(lambda p, t: model.hidden(p, t, last=last))
    return fn.lower(params, tokens).compile().memory_analysis(
    ).temp_size_in_bytes

  assert scratch(T) <= scratch(None) + layer_bytes // 4


@pytest.mark.parametrize("unroll", [False, True])
def test_last_positions_run_the_last_mlp_on_those_rows(model_and_params,
                                                        unroll):
  # The saving itself: the last layer's MLP works on [B, T, F] activations
  # (in the scan, inside the conditional that picks the last layer), while
  # the full pass has only [B, P + T, F] ones.
  model, params = model_and_params
  tokens = _tokens(model.config.vocab_size, P + T)

  def jaxpr(last, remat="none"):
    return str(jax.make_jaxpr(lambda p: model.hidden(
        p, tokens, FULL_MASK, last=last, unroll=unroll, remat=remat))(params))

  last_rows = f"f32[{B},{T},{model.config.d_ff}]"
  with_last = jaxpr(T)
  assert last_rows not in jaxpr(None)
  assert last_rows in with_last
  if not unroll:  # a remat mode's scan keeps its full last layer
    remat_full = jaxpr(T, remat="full")
    assert "cond[" in with_last and "cond[" not in remat_full
    assert last_rows not in remat_full


@pytest.mark.parametrize("remat, unroll", [("none", True), ("none", False),
                                           ("full", False)])
def test_last_positions_give_the_full_pass_gradient(model_and_params, remat,
                                                    unroll):
  model, params = model_and_params
  tokens = _tokens(model.config.vocab_size, P + T)
  weights = jax.random.normal(jax.random.key(2), (B, T, model.config.d_model))

  def objective(p, last):
    kwargs = dict(remat=remat, unroll=unroll)
    h = (model.hidden(p, tokens, FULL_MASK, last=T, **kwargs) if last
         else model.hidden(p, tokens, FULL_MASK, **kwargs)[:, -T:])
    return jnp.sum(h * weights)

  grads = [jax.jit(jax.grad(objective), static_argnums=1)(params, last)
           for last in (False, True)]
  flat = [jax.tree_util.tree_leaves_with_path(g) for g in grads]
  assert [path for path, _ in flat[0]] == [path for path, _ in flat[1]]
  for (path, full), (_, part) in zip(*flat):
    scale = float(jnp.max(jnp.abs(full))) + 1e-6
    np.testing.assert_allclose(part, full, atol=1e-5 * scale, rtol=1e-4,
                               err_msg=jax.tree_util.keystr(path))


@pytest.mark.parametrize("unroll", [False, True])
def test_last_positions_of_a_one_layer_model(unroll):
  config = hf_models.jax_config("llama_gqa_untied")
  model = networks.make_model(dataclasses.replace(config, n_layers=1))
  params = model.init(jax.random.key(0))
  tokens = _tokens(config.vocab_size, P + T)
  hidden = jax.jit(model.hidden, static_argnames=("last", "unroll"))
  np.testing.assert_allclose(
      hidden(params, tokens, FULL_MASK, last=T, unroll=unroll),
      hidden(params, tokens, FULL_MASK)[:, -T:], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("last", [-1, P + T + 1, True, 2.0])
def test_last_outside_the_tokens_is_refused(model_and_params, last):
  model, params = model_and_params
  tokens = _tokens(model.config.vocab_size, P + T)
  with pytest.raises(ValueError, match="last must be"):
    model.hidden(params, tokens, FULL_MASK, last=last)


def test_prefill_and_decode_match_apply(model_and_params, jitted):
  model, params = model_and_params
  tokens = _tokens(model.config.vocab_size, P + T)
  full_mask = np.concatenate([PROMPT_MASK, np.ones((B, T), bool)], axis=1)
  expected = jitted.apply(params, tokens, full_mask)  # [B, P + T, V]

  # Extra slots stay empty and must not be attended to.
  cache = model.init_cache(B, P + T + 3)
  logits, cache = jitted.prefill(params, tokens[:, :P], PROMPT_MASK, cache)
  steps = [logits]
  chex.clear_trace_counter()
  for t in range(T):
    step_logits, cache = jitted.decode(params, tokens[:, P + t], cache)
    steps.append(step_logits[:, None])
  got = np.concatenate(steps, axis=1)
  valid = full_mask[..., None]
  np.testing.assert_allclose(np.where(valid, got, 0),
                             np.where(valid, expected, 0), atol=1e-5, rtol=0)
  assert int(cache.index) == P + T
  np.testing.assert_array_equal(cache.next_positions,
                                PROMPT_MASK.sum(-1) + T)
  np.testing.assert_array_equal(cache.mask[:, :P + T], full_mask)
  assert not np.any(cache.mask[:, P + T:])


def test_decode_runs_inside_while_loop(model_and_params, jitted):
  model, params = model_and_params
  tokens = _tokens(model.config.vocab_size, P)
  cache = model.init_cache(B, P + T + 3)
  logits, cache = jitted.prefill(params, tokens, PROMPT_MASK, cache)
  steps = T - 1  # the first token comes from prefill

  @jax.jit
  def greedy(params, first, cache):
    def body(carry):
      i, token, cache, out = carry
      step_logits, cache = model.decode(params, token, cache)
      token = jnp.argmax(step_logits, -1).astype(jnp.int32)
      return i + 1, token, cache, out.at[:, i].set(token)
    init = (0, first, cache, jnp.zeros((B, steps), jnp.int32))
    return jax.lax.while_loop(lambda c: c[0] < steps, body, init)[3]

  first = jnp.argmax(logits[:, -1], -1).astype(jnp.int32)
  generated = greedy(params, first, cache)
  # Reference: greedy decoding with full forward passes over a fixed-size
  # buffer; causal attention makes the not-yet-written tail irrelevant.
  buffer = np.zeros((B, P + T), np.int32)
  buffer[:, :P] = tokens
  buffer[:, P] = first
  mask = np.concatenate([PROMPT_MASK, np.ones((B, T), bool)], axis=1)
  for t in range(steps):
    logits = jitted.apply(params, buffer, mask)
    buffer[:, P + 1 + t] = np.argmax(logits[:, P + t], -1)
  np.testing.assert_array_equal(generated, buffer[:, P + 1:])


def test_bfloat16_params_give_close_float32_logits(model_and_params, jitted):
  model, params = model_and_params
  tokens = _tokens(model.config.vocab_size, P)
  params16 = jax.tree.map(lambda x: x.astype(jnp.bfloat16), params)
  logits16 = jitted.apply(params16, tokens, PROMPT_MASK)
  logits32 = jitted.apply(params, tokens, PROMPT_MASK)
  assert logits16.dtype == jnp.float32
  valid = PROMPT_MASK[..., None]
  diff = np.abs(np.where(valid, logits16 - logits32, 0)).max()
  scale = np.abs(np.where(valid, logits32, 0)).max()
  # bfloat16 keeps 8 bits of mantissa (relative error ~4e-3 per op).
  assert diff < 0.05 * scale, (diff, scale)
  cache = model.init_cache(B, P, dtype=jnp.bfloat16)
  cache = jax.eval_shape(model.prefill, params16, tokens, PROMPT_MASK,
                         cache)[1]
  assert cache.keys.dtype == jnp.bfloat16


def test_bfloat16_prefill_and_decodes_run_and_match_apply(model_and_params):
  """bfloat16 weights and cache through prefill, the scan decode (new
  tokens attending to the cache through `layers.attention`) and the
  prepared decode: every cached-attention product compiles and runs (XLA's
  CPU dot has no bfloat16 x bfloat16 -> float32 kernel of its own) and the
  logits stay within bfloat16 rounding of `apply`'s."""
  model, params = model_and_params
  params16 = jax.tree.map(lambda x: x.astype(jnp.bfloat16), params)
  tokens = _tokens(model.config.vocab_size, P + T)
  full_mask = np.concatenate([PROMPT_MASK, np.ones((B, T), bool)], axis=1)
  want = jax.jit(model.apply)(params, tokens, full_mask)[:, P:]  # [B, T, V]
  prepared = jax.jit(model.prepare_decode)(params16)
  for decode_params in (params16, prepared):
    cache = model.init_cache(B, P + T, dtype=jnp.bfloat16)
    _, cache = jax.jit(model.prefill)(params16, tokens[:, :P], PROMPT_MASK,
                                      cache)
    got = []
    for t in range(T):
      logits, cache = jax.jit(model.decode)(decode_params, tokens[:, P + t],
                                            cache)
      got.append(logits)
    got = np.stack(got, axis=1)
    assert np.all(np.isfinite(got))
    scale = np.abs(want).max()
    assert np.abs(got - want).max() < 0.05 * scale


def test_init_cache_shapes(model_and_params):
  model, _ = model_and_params
  c = model.config
  cache = model.init_cache(2, 7)
  chex.assert_shape(cache.keys, (c.n_layers, 2, c.n_kv_heads, c.head_dim, 7))
  chex.assert_shape(cache.values,
                    (c.n_layers, 2, c.n_kv_heads, 7, c.head_dim))
  chex.assert_shape(cache.mask, (2, 7))
  chex.assert_shape(cache.next_positions, (2,))
  assert cache.index.dtype == jnp.int32
  with pytest.raises(ValueError, match="max_length"):
    model.init_cache(2, 0)


def test_public_names_are_exported():
  for name in networks.__all__:
    assert getattr(networks, name) is not None, name
  assert {"ModelConfig", "make_model", "LanguageModel", "KVCache",
          "from_pretrained", "save_pretrained",
          "load_tokenizer"} <= set(networks.__all__)
