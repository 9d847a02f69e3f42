"""Fast one-token decode step of T5's decoder, for sampling loops.

The T5 counterpart of gkdrl/networks/decoding.py (read its docstring for
the reasons). `EncoderDecoderModel.decode` on the model's own parameters
runs the decoder layers in a `lax.scan` over stacked weights, and XLA CPU
copies every layer's weight and cache slices out of the stacked arrays
before its products, once per generated token. A loop over tokens prepares
instead, once and outside the loop:

- `prepare`: the decoder's weights split into one array per layer and
  transposed to [out, in], the self-attention's query, key and value joined
  into one product (and a gated MLP's gate and up), the relative-position
  table and the unembedding (the encoder's weights are not needed: the
  cache holds the cross-attention keys and values, computed once by
  `prefill`);
- `unstack_cache`: the self- and cross-attention keys and values as one
  array per layer,

and `decode` runs the layers unrolled on them, features-first ([D, B], every
weight the left operand of its product), writing each new key and value
into its layer's cache array in place. The relative-position bias of the one
new query is computed once per step for all layers, [H, S] (not the
[H, S, S] of the whole sequence).

The results equal the scan's up to float rounding.
"""

from typing import Any, NamedTuple

import haiku as hk
import jax
import jax.numpy as jnp

from gkdrl.networks import decoding
from gkdrl.networks import layers
from gkdrl.networks import t5_layers as tl
from gkdrl.networks.t5_config import T5Config

Array = jax.Array

_DECODER = "t5/decoder/"
_LAYERS = "t5/decoder/layers/"
# Self-attention products that read the same input, joined into one each.
_FUSED = {"self_attention/qkv": ("self_attention/query", "self_attention/key",
                                 "self_attention/value"),
          "mlp/gate_up": ("mlp/gate", "mlp/up")}


class T5DecodeParams(NamedTuple):
  """The decoder's weights per layer and transposed; see `prepare`."""

  embed: Array  # [V, D] shared token embeddings
  relative_bias: Array  # [buckets, H] the decoder's position-bias table
  final_norm: Array  # [D] scale of the decoder's final norm
  unembed: Array  # [V, D], logits^T = unembed @ h^T (scaling not included)
  # Per layer, e.g. {"self_attention/qkv": [3 H Dh, D],
  # "cross_attention/query": [H Dh, D], "mlp_norm": [D], ...}: every matrix
  # transposed to [out, in], every norm's scale.
  layers: tuple[dict[str, Array], ...]


def prepare(config: T5Config, params: hk.Params) -> T5DecodeParams:
  """Splits the decoder's stacked parameters into per-layer, [out, in] ones.

  Args:
    config: the model configuration.
    params: the model's parameters (per-layer weights stacked on axis 0).

  Returns:
    The decoder's weights as `T5DecodeParams`: a copy of every per-layer
    weight (call it once, outside any loop over tokens).
  """
  per_layer = []
  for i in range(config.n_decoder_layers):
    layer = {}
    for name, leaves in params.items():
      if name.startswith(_LAYERS):
        (key, value), = leaves.items()  # "w" [in, out] or "scale" [D]
        layer[name[len(_LAYERS):]] = value[i].T if key == "w" else value[i]
    for fused, names in _FUSED.items():
      if all(name in layer for name in names):
        layer[fused] = jnp.concatenate([layer.pop(n) for n in names], axis=0)
    per_layer.append(layer)
  embed = params["t5/shared"]["embeddings"]
  unembed = embed if config.tie_embeddings else params["t5/unembed"]["w"].T
  return T5DecodeParams(
      embed=embed,
      relative_bias=params[_DECODER + "relative_bias"]["embeddings"],
      final_norm=params[_DECODER + "final_norm"]["scale"],
      unembed=unembed, layers=tuple(per_layer))


def _norm(config: T5Config, x_t: Array, scale: Array) -> Array:
  """`t5_layers.norm` on features-first inputs x_t [D, B]."""
  x32 = x_t.astype(jnp.float32)
  variance = jnp.mean(jnp.square(x32), axis=0, keepdims=True)
  y = x32 * jax.lax.rsqrt(variance + config.norm_eps)
  return (y * scale.astype(jnp.float32)[:, None]).astype(x_t.dtype)


def _attend(q: Array, keys: Array, values: Array, bias: Array | None,
            allowed: Array) -> Array:
  """One query per row: q [B, H, Dh], keys/values [B, H, S, Dh], bias None
  or [H, S], allowed [B, S]; returns [H Dh, B] (before `out`)."""
  b, h, dh = q.shape
  scores = jnp.einsum("bhd,bhsd->bhs", q, keys.astype(q.dtype),
                      preferred_element_type=jnp.float32)  # [B, H, S]
  if bias is not None:
    scores = scores + bias[None]
  scores = jnp.where(allowed[:, None], scores, layers.MASKED)
  probs = jax.nn.softmax(scores, axis=-1).astype(values.dtype)
  out = jnp.einsum("bhs,bhsd->bhd", probs, values)  # [B, H, Dh]
  return out.reshape(b, h * dh).T


def _self_attention(config: T5Config, h_t: Array, layer: dict[str, Array],
                    keys: Array, values: Array, bias: Array, allowed: Array,
                    index: Array) -> tuple[Array, Array, Array]:
  """The new token's self-attention; writes its key/value at slot `index`.

  Returns:
    `(out [D, B], keys, values)`, keys/values [B, H, S, Dh] updated in place.
  """
  b = h_t.shape[1]
  h, dh = config.n_heads, config.head_dim
  # The barrier keeps XLA from folding the transposes below into the
  # product (which would make the weight its right operand again).
  qkv = jax.lax.optimization_barrier(
      jnp.dot(layer["self_attention/qkv"], h_t))  # [3 H Dh, B]
  q, k, v = (x.T.reshape(b, h, 1, dh) for x in jnp.split(qkv, 3, axis=0))
  start = (0, 0, index, 0)
  keys = jax.lax.dynamic_update_slice(keys, k.astype(keys.dtype), start)
  values = jax.lax.dynamic_update_slice(values, v.astype(values.dtype), start)
  out = _attend(q[:, :, 0], keys, values, bias, allowed)
  return jnp.dot(layer["self_attention/out"], out), keys, values


def _cross_attention(config: T5Config, h_t: Array, layer: dict[str, Array],
                     keys: Array, values: Array, allowed: Array) -> Array:
  """The new token's attention to the cached encoder keys/values, [D, B]."""
  b = h_t.shape[1]
  q = jax.lax.optimization_barrier(
      jnp.dot(layer["cross_attention/query"], h_t))  # [H Dh, B]
  q = q.T.reshape(b, config.n_heads, config.head_dim)
  out = _attend(q, keys, values, None, allowed)
  return jnp.dot(layer["cross_attention/out"], out)


def _mlp(config: T5Config, h_t: Array, layer: dict[str, Array]) -> Array:
  act = layers.ACTIVATIONS[config.activation]
  if config.gated_mlp:
    gate, up = jnp.split(jnp.dot(layer["mlp/gate_up"], h_t), 2, axis=0)
    hidden = act(gate) * up  # [F, B]
  else:
    hidden = act(jnp.dot(layer["mlp/up"], h_t))
  return jnp.dot(layer["mlp/down"], hidden)


def _bias(config: T5Config, table: Array, index: Array,
          length: int) -> Array:
  """The decoder's relative-position bias [H, S] of the query at `index`."""
  buckets = tl.relative_position_bucket(
      jnp.arange(length) - index, bidirectional=False,
      num_buckets=config.relative_buckets,
      max_distance=config.relative_max_distance)  # [S]
  return table[buckets].astype(jnp.float32).T


def decode(config: T5Config, params: T5DecodeParams, tokens: Array,
           cache: Any) -> tuple[Array, Any]:
  """One cached decode step; same contract as `EncoderDecoderModel.decode`.

  Args:
    config: the model configuration.
    params: weights from `prepare`.
    tokens: [B] int32, one real decoder token per row.
    cache: the model's T5Cache, stacked or per layer (`unstack_cache`); the
      per-layer form is updated in place, the stacked one is split and
      joined again (a copy of the cache per call).

  Returns:
    `(logits [B, V] float32, cache)` with one more slot written, in the form
    of the given cache.
  """
  stacked = not isinstance(cache.keys, (tuple, list))
  if stacked:
    cache = unstack_cache(cache)
  x_t = params.embed[tokens].T  # [D, B]
  mask = jax.lax.dynamic_update_slice(
      cache.mask, jnp.ones((tokens.shape[0], 1), bool), (0, cache.index))
  length = cache.mask.shape[1]
  bias = _bias(config, params.relative_bias, cache.index, length)  # [H, S]
  # Causal: slots after `index` are empty, so the mask covers it.
  keys, values = list(cache.keys), list(cache.values)
  for i, layer in enumerate(params.layers):
    h_t = _norm(config, x_t, layer["self_attn_norm"])
    out, keys[i], values[i] = _self_attention(
        config, h_t, layer, keys[i], values[i], bias, mask, cache.index)
    x_t = x_t + out
    h_t = _norm(config, x_t, layer["cross_attn_norm"])
    x_t = x_t + _cross_attention(config, h_t, layer, cache.cross_keys[i],
                                 cache.cross_values[i], cache.source_mask)
    x_t = x_t + _mlp(config, _norm(config, x_t, layer["mlp_norm"]), layer)
  h_t = _norm(config, x_t, params.final_norm)
  if config.scale_decoder_outputs:
    h_t = h_t * config.d_model ** -0.5
  logits_t = jnp.dot(params.unembed, h_t,
                     preferred_element_type=jnp.float32)  # [V, B]
  # As in decoding.decode: the barrier keeps the unembedding the left
  # operand of its product.
  logits = jax.lax.optimization_barrier(logits_t).T  # [B, V]
  cache = cache._replace(keys=tuple(keys), values=tuple(values), mask=mask,
                         index=cache.index + 1)
  return logits, stack_cache(cache) if stacked else cache


_CACHED = ("keys", "values", "cross_keys", "cross_values")


def unstack_cache(cache: Any) -> Any:
  """The T5Cache with its four key/value fields as tuples of N arrays
  [B, H, S, Dh]."""
  return decoding.unstack_cache(cache)._replace(
      **{name: tuple(getattr(cache, name)) for name in _CACHED[2:]})


def stack_cache(cache: Any) -> Any:
  """The T5Cache with its key/value fields stacked, [N, B, H, S, Dh]."""
  if not isinstance(cache.keys, (tuple, list)):
    return cache
  return cache._replace(
      **{name: jnp.stack(getattr(cache, name)) for name in _CACHED})
