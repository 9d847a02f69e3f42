"""Fast one-token decode step for sampling loops.

`LanguageModel.decode` on the model's own parameters runs the layers in a
`lax.scan` over weights stacked on a leading layer axis, and XLA CPU copies
every layer's weight slice and KV cache slice out of the stacked arrays
before its matrix products: all the model's weights once per generated
token. Slicing inside an unrolled step copies just the same (XLA does not
hoist the slices out of the sampler's while loop). So a loop over tokens
prepares, once and outside the loop:

- `prepare`: the weights split into one array per layer and transposed to
  [out, in], with the products that read the same input joined (query, key
  and value; gate and up) (a copy of every per-layer weight, held while
  sampling);
- `unstack_cache`: the KV cache as one keys and one values array per layer,

and `decode` runs the layers unrolled on them: every product reads its
operands in place, and each new key and value is written into its layer's
cache array in place (XLA cannot prove that in place for one stacked array
read by 30 unrolled layers, and copies the whole cache instead). The
residual stream is kept features-first, [D, B], so every weight is the left
operand of its product, `w [out, in] @ x [in, B]`: with few rows, XLA CPU's
matrix library (YNNPACK) runs that form about 20% faster than
`x [B, in] @ w [in, out]`, and the unembedding 35% faster
(benchmarks/README.md, Sampling).

The results equal the scan's up to float rounding.
"""

from typing import Any, NamedTuple

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from gkdrl.networks import layers
from gkdrl.networks.config import ModelConfig

Array = jax.Array


class DecodeParams(NamedTuple):
  """A model's weights per layer and transposed, for `decode`; see `prepare`.
  """

  embed: Array  # [V, D] token embeddings
  position_embed: Array | None  # [max_positions, D] (learned positions)
  final_norm: dict[str, Array]  # scale [D] (and offset [D])
  unembed: Array  # [V, D], logits^T = unembed @ h^T
  # Per layer, e.g. {"attention/query": {"w": [H Dh, D], "b": [H Dh]},
  # "attn_norm": {"scale": [D]}, ...}: the layer's haiku parameters with
  # every matrix transposed to [out, in].
  layers: tuple[dict[str, dict[str, Array]], ...]


def prepare(config: ModelConfig, params: hk.Params, prefix: str = "lm"
            ) -> DecodeParams:
  """Splits stacked haiku parameters into per-layer, transposed weights.

  Args:
    config: the model configuration.
    params: the model's parameters (per-layer weights stacked on axis 0).
    prefix: the haiku scope of the model.

  Returns:
    The same weights as `DecodeParams`: a copy of every per-layer weight
    (call it once, outside any loop over tokens).
  """
  stacked = f"{prefix}/layers/"
  per_layer = []
  for i in range(config.n_layers):
    layer = {}
    for name, leaves in params.items():
      if name.startswith(stacked):
        # Linear weights [in, out] become [out, in]; the rest is sliced.
        layer[name[len(stacked):]] = {
            k: v[i].T if k == "w" else v[i] for k, v in leaves.items()}
    per_layer.append(_fuse(layer))
  embed = params[f"{prefix}/embed"]["embeddings"]
  unembed = (embed if config.tie_embeddings
             else params[f"{prefix}/unembed"]["w"].T)
  position_embed = None
  if config.position == "learned":
    position_embed = params[f"{prefix}/position_embed"]["embeddings"]
  return DecodeParams(
      embed=embed, position_embed=position_embed,
      final_norm=dict(params[f"{prefix}/final_norm"]),
      unembed=unembed, layers=tuple(per_layer))


# Linear layers that read the same input, joined into one product each:
# with one token per row every product is short, and fewer, larger ones use
# the matrix library better.
_FUSED = {"attention/qkv": ("attention/query", "attention/key",
                            "attention/value"),
          "mlp/gate_up": ("mlp/gate", "mlp/up")}


def _fuse(layer: dict[str, dict[str, Array]]) -> dict[str, dict[str, Array]]:
  """Stacks the [out, in] weights (and biases) of each `_FUSED` group."""
  layer = dict(layer)
  for fused, names in _FUSED.items():
    if not all(name in layer for name in names):
      continue
    parts = [layer.pop(name) for name in names]
    if any(set(p) != set(parts[0]) for p in parts):
      raise ValueError(f"layers {names} differ in which have biases.")
    layer[fused] = {k: jnp.concatenate([p[k] for p in parts], axis=0)
                    for k in parts[0]}
  return layer


def _linear(x_t: Array, layer: dict[str, Any], name: str) -> Array:
  """`hk.Linear` on features-first inputs: (x @ w + b)^T = w^T @ x^T + b.

  Args:
    x_t: inputs [in, B].
    layer: a `DecodeParams.layers` entry; layer[name] = {"w": [out, in],
      "b": [out] (optional)}.
    name: the linear layer's name, e.g. "attention/query".

  Returns:
    Outputs [out, B].
  """
  y = jnp.dot(layer[name]["w"], x_t)
  return y + layer[name]["b"][:, None] if "b" in layer[name] else y


def _attention(config: ModelConfig, h_t: Array, layer: dict[str, Any],
               rope: tuple[Array, Array] | None, keys: Array, values: Array,
               mask: Array, index: Array) -> tuple[Array, Array, Array]:
  """One layer's attention for one new token per row.

  Args:
    config: the model configuration.
    h_t: normed inputs [D, B].
    layer: the layer's `DecodeParams.layers` entry.
    rope: the new tokens' `layers.rotary_tables` (rotary models), else None.
    keys: this layer's cached keys [B, K, Dh, S].
    values: this layer's cached values [B, K, S, Dh].
    mask: [B, S] bool valid slots, slot `index` (the new token's) included.
    index: [] int32, the slot the new token is written to.

  Returns:
    `(out [D, B], keys, values)`, the cache arrays with the new token's key
    and value written in place at slot `index`.
  """
  b = h_t.shape[1]
  n_h, n_k, dh = config.n_heads, config.n_kv_heads, config.head_dim
  # The barrier keeps XLA from folding the transposes to rows-first below
  # into the products (which would make the weights right operands again).
  qkv = jax.lax.optimization_barrier(
      _linear(h_t, layer, "attention/qkv"))  # [(H + 2 K) Dh, B]
  q, k, v = jnp.split(qkv, [n_h * dh, (n_h + n_k) * dh], axis=0)
  q = q.T.reshape(b, 1, n_h, dh)
  k = k.T.reshape(b, 1, n_k, dh)
  v = v.T.reshape(b, n_k, 1, dh)
  if rope is not None:
    q, k = layers.apply_rotary(q, rope), layers.apply_rotary(k, rope)
  k = k.reshape(b, n_k, dh, 1)
  keys = jax.lax.dynamic_update_slice(keys, k.astype(keys.dtype),
                                      (0, 0, 0, index))
  values = jax.lax.dynamic_update_slice(values, v.astype(values.dtype),
                                        (0, 0, index, 0))
  # q head j * G + g reads key/value head j (HF's repeat_kv layout).
  q = q.reshape(b, n_k, n_h // n_k, dh)  # [B, K, G, Dh]
  scores = jnp.einsum("bkgd,bkds->bkgs", q, keys.astype(q.dtype),
                      preferred_element_type=jnp.float32)  # [B, K, G, S]
  scale = np.float32(1.0 / np.sqrt(dh))
  scores = jnp.where(mask[:, None, None, :], scores * scale, layers.MASKED)
  probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
  out = jnp.einsum("bkgs,bksd->bkgd", probs,
                   values.astype(v.dtype))  # [B, K, G, Dh]
  out = _linear(out.reshape(b, n_h * dh).T, layer, "attention/out")
  return out, keys, values


def decode(config: ModelConfig, params: DecodeParams, tokens: Array,
           cache: Any) -> tuple[Array, Any]:
  """One cached decode step; same contract as `LanguageModel.decode`.

  The residual stream is kept features-first, [D, B], so that every weight
  is the left operand of its product (see the module docstring).

  Args:
    config: the model configuration.
    params: weights from `prepare`.
    tokens: [B] int32, one real token per row.
    cache: the model's KVCache, stacked or per layer (`unstack_cache`); the
      per-layer form is updated in place, the stacked one is split and
      joined again (a copy of the cache per call).

  Returns:
    `(logits [B, V] float32, cache)` with one more slot written, in the form
    of the given cache.
  """
  stacked = not isinstance(cache.keys, (tuple, list))
  if stacked:
    cache = unstack_cache(cache)
  positions = cache.next_positions  # [B]
  x = params.embed[tokens]  # [B, D]
  if params.position_embed is not None:
    x = x + params.position_embed[positions]
  x_t = x.T  # [D, B]
  mask = jax.lax.dynamic_update_slice(
      cache.mask, jnp.ones((tokens.shape[0], 1), bool), (0, cache.index))
  act = layers.ACTIVATIONS[config.activation]
  rope = (layers.rotary_tables(positions[:, None], config.head_dim,
                               config.rope_theta)
          if config.position == "rope" else None)
  keys, values = list(cache.keys), list(cache.values)
  for i, layer in enumerate(params.layers):
    h_t = layers.normalize(config, x_t, **layer["attn_norm"], axis=0)
    out, keys[i], values[i] = _attention(
        config, h_t, layer, rope, keys[i], values[i], mask, cache.index)
    x_t = x_t + out
    h_t = layers.normalize(config, x_t, **layer["mlp_norm"], axis=0)
    if config.gated_mlp:
      gate, up = jnp.split(_linear(h_t, layer, "mlp/gate_up"), 2, axis=0)
      h_t = act(gate) * up  # [F, B]
    else:
      h_t = act(_linear(h_t, layer, "mlp/up"))
    x_t = x_t + _linear(h_t, layer, "mlp/down")
  h_t = layers.normalize(config, x_t, **params.final_norm, axis=0)
  logits_t = jnp.dot(params.unembed, h_t,
                     preferred_element_type=jnp.float32)  # [V, B]
  # The barrier keeps XLA from folding the transpose into the product, which
  # would make the unembedding its right operand again (1.5x slower).
  logits = jax.lax.optimization_barrier(logits_t).T  # [B, V]
  cache = cache._replace(keys=tuple(keys), values=tuple(values), mask=mask,
                         index=cache.index + 1, next_positions=positions + 1)
  return logits, stack_cache(cache) if stacked else cache


def unstack_cache(cache: Any) -> Any:
  """The cache with keys and values as tuples of N arrays ([B, K, Dh, S]
  keys, [B, K, S, Dh] values)."""
  if isinstance(cache.keys, (tuple, list)):
    return cache
  return cache._replace(keys=tuple(cache.keys), values=tuple(cache.values))


def stack_cache(cache: Any) -> Any:
  """The cache with keys and values stacked ([N, B, K, Dh, S] keys,
  [N, B, K, S, Dh] values)."""
  if not isinstance(cache.keys, (tuple, list)):
    return cache
  return cache._replace(keys=jnp.stack(cache.keys),
                        values=jnp.stack(cache.values))
