"""Haiku building blocks of T5: RMS norm, relative position bias, attention.

See Raffel et al. 2020, "Exploring the Limits of Transfer Learning with a
Unified Text-to-Text Transformer" (https://arxiv.org/abs/1910.10683),
Sec. 2.1, and gkdrl/networks/t5_config.py for the variants.

Shapes: B batch, L query tokens, S key slots (source tokens for the cross
attention, cached decoder slots for the self-attention), D width, H heads,
Dh head width, F feed-forward width, N layers.
"""

import math

import haiku as hk
import jax
import jax.numpy as jnp

from gkdrl.networks import layers
from gkdrl.networks.t5_config import T5Config

Array = jax.Array
MASKED = layers.MASKED


def norm(config: T5Config, x: Array, name: str) -> Array:
  """T5's layer norm: `scale * x / rms(x)`, no mean, no bias, in float32.

  Args:
    config: the model configuration (`norm_eps`).
    x: inputs [..., D].
    name: the parameter's module name.

  Returns:
    The normalised `x` [..., D] in the dtype of `x`.
  """
  with hk.name_scope(name):
    scale = hk.get_parameter("scale", [x.shape[-1]], init=jnp.ones)
  x32 = x.astype(jnp.float32)
  variance = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
  y = x32 * jax.lax.rsqrt(variance + config.norm_eps)
  return (y * scale.astype(jnp.float32)).astype(x.dtype)


def relative_position_bucket(relative_position: Array, *, bidirectional: bool,
                             num_buckets: int, max_distance: int) -> Array:
  """Bucket of each key-minus-query distance (Raffel et al. 2020, Sec. 2.1).

  Half of a direction's buckets hold the distances 0, 1, ... exactly, the
  other half grow logarithmically up to `max_distance`, beyond which all
  distances share the last bucket. Bidirectional buckets split the range
  between keys before and after the query; causal ones see only keys at or
  before it (positive distances fall into bucket 0). This follows Mesh
  TensorFlow's `_relative_position_bucket`, float32 logarithm included.

  Args:
    relative_position: int key position minus query position, any shape.
    bidirectional: True in the encoder, False in the decoder.
    num_buckets: total number of buckets.
    max_distance: distance from which the last bucket is used.

  Returns:
    int32 buckets in [0, num_buckets), the shape of `relative_position`.
  """
  relative_position = relative_position.astype(jnp.int32)
  buckets = jnp.zeros_like(relative_position)
  if bidirectional:
    num_buckets //= 2
    buckets = buckets + (relative_position > 0).astype(jnp.int32) * num_buckets
    distance = jnp.abs(relative_position)
  else:
    distance = -jnp.minimum(relative_position, 0)
  max_exact = num_buckets // 2
  is_small = distance < max_exact
  # max(distance, 1) keeps log finite where the small branch is taken.
  ratio = jnp.maximum(distance, 1).astype(jnp.float32) / max_exact
  large = max_exact + (
      jnp.log(ratio) / math.log(max_distance / max_exact)
      * (num_buckets - max_exact)).astype(jnp.int32)
  large = jnp.minimum(large, num_buckets - 1)
  return buckets + jnp.where(is_small, distance, large)


def position_bias(config: T5Config, query_positions: Array,
                  key_positions: Array, *, bidirectional: bool) -> Array:
  """The learned bias [H, L, S] that every layer adds to its scores.

  Args:
    config: the model configuration.
    query_positions: [L] int positions of the queries.
    key_positions: [S] int positions of the keys.
    bidirectional: True in the encoder, False in the decoder.

  Returns:
    float32 bias [H, L, S] from the `relative_bias` table [buckets, H].
  """
  with hk.name_scope("relative_bias"):
    table = hk.get_parameter(
        "embeddings", [config.relative_buckets, config.n_heads],
        init=jnp.zeros)
  relative = key_positions[None, :] - query_positions[:, None]  # [L, S]
  buckets = relative_position_bucket(
      relative, bidirectional=bidirectional,
      num_buckets=config.relative_buckets,
      max_distance=config.relative_max_distance)
  return jnp.transpose(table[buckets].astype(jnp.float32), (2, 0, 1))


def _linear(size: int, name: str) -> layers.Linear:
  return layers.Linear(size, with_bias=False, name=name)


def project_kv(config: T5Config, x: Array) -> tuple[Array, Array]:
  """Keys and values [B, S, H, Dh] of inputs [B, S, D] (current scope)."""
  b, s, _ = x.shape
  shape = (b, s, config.n_heads, config.head_dim)
  k = _linear(config.n_heads * config.head_dim, "key")(x).reshape(shape)
  v = _linear(config.n_heads * config.head_dim, "value")(x).reshape(shape)
  return k, v


def query(config: T5Config, x: Array) -> Array:
  """Queries [B, L, H, Dh] of inputs [B, L, D] (current scope)."""
  b, l, _ = x.shape
  q = _linear(config.n_heads * config.head_dim, "query")(x)
  return q.reshape(b, l, config.n_heads, config.head_dim)


def attend(config: T5Config, q: Array, k: Array, v: Array,
           bias: Array | None, allowed: Array) -> Array:
  """Unscaled dot-product attention plus bias, then the output projection.

  Args:
    config: the model configuration.
    q: queries [B, L, H, Dh].
    k: keys [B, S, H, Dh].
    v: values [B, S, H, Dh].
    bias: None or float32 [H, L, S], added to the scores.
    allowed: bool [B, L, S] or [B, 1, S], which keys each query may see.

  Returns:
    The attention output [B, L, D] (after `out`, in the current scope).
  """
  b, l, h, dh = q.shape
  scores = jnp.einsum("blhd,bshd->bhls", q, k.astype(q.dtype),
                      preferred_element_type=jnp.float32)  # [B, H, L, S]
  if bias is not None:
    scores = scores + bias[None]
  scores = jnp.where(allowed[:, None], scores, MASKED)
  probs = layers.softmax(scores).astype(v.dtype)
  out = jnp.einsum("bhls,bshd->blhd", probs, v)  # [B, L, H, Dh]
  return _linear(config.d_model, "out")(out.reshape(b, l, h * dh))


def mlp(config: T5Config, x: Array) -> Array:
  """`down(act(gate(x)) * up(x))` (gated, HF wi_0/wi_1/wo) or
  `down(act(up(x)))` (HF wi/wo), [B, L, D] -> [B, L, D]."""
  act = layers.ACTIVATIONS[config.activation]
  with hk.name_scope("mlp"):
    up = _linear(config.d_ff, "up")(x)  # [B, L, F]
    if config.gated_mlp:
      hidden = act(_linear(config.d_ff, "gate")(x)) * up
    else:
      hidden = act(up)
    return _linear(config.d_model, "down")(hidden)


def embedding_table(config: T5Config) -> Array:
  """The shared [V, D] token embedding of encoder, decoder (and head)."""
  with hk.name_scope("shared"):
    return hk.get_parameter("embeddings", [config.vocab_size, config.d_model],
                            init=jnp.zeros)
