"""Haiku building blocks of the decoder: norms, rotary embeddings, attention.

One set of blocks serves every family; `ModelConfig` switches pick LayerNorm
or RMSNorm, learned or rotary positions, a plain or gated MLP, biases, and
grouped-query attention.

Shapes (see gkdrl/types.py): B batch, L new tokens in this call, S cached
slots, D width, H query heads, K key/value heads (H_kv), G = H / K query heads
per key/value head, Dh head width, F MLP width.
"""

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from gkdrl.networks.config import ModelConfig

Array = jax.Array

# Finite rather than -inf so that a query with no valid key (a left-padding
# position) gets a uniform, finite distribution instead of NaN.
MASKED = -1e30


class Norm(hk.Module):
  """LayerNorm (`norm="layer"`) or RMSNorm (`norm="rms"`), in float32."""

  def __init__(self, config: ModelConfig, name: str):
    super().__init__(name=name)
    self._config = config

  def __call__(self, x: Array) -> Array:
    """Normalises the last axis of `x` [..., D]; returns the dtype of `x`."""
    d = x.shape[-1]
    scale = hk.get_parameter("scale", [d], init=jnp.ones)
    offset = None
    if self._config.norm == "layer":
      offset = hk.get_parameter("offset", [d], init=jnp.zeros)
    return normalize(self._config, x, scale, offset)


def normalize(config: ModelConfig, x: Array, scale: Array,
              offset: Array | None = None, axis: int = -1) -> Array:
  """`Norm`'s computation on given parameters.

  Args:
    config: the model configuration (`norm`, `norm_eps`).
    x: inputs, D features along `axis`.
    scale: [D] scale.
    offset: [D] offset (LayerNorm only).
    axis: the feature axis of `x`.

  Returns:
    The normalised `x` in the dtype of `x`, computed in float32.
  """
  shape = [1] * x.ndim
  shape[axis] = x.shape[axis]  # broadcasts scale and offset along `axis`
  x32 = x.astype(jnp.float32)
  if config.norm == "layer":
    x32 = x32 - jnp.mean(x32, axis=axis, keepdims=True)
  variance = jnp.mean(jnp.square(x32), axis=axis, keepdims=True)
  y = x32 * jax.lax.rsqrt(variance + config.norm_eps)
  y = y * scale.astype(jnp.float32).reshape(shape)
  if config.norm == "layer":
    y = y + offset.astype(jnp.float32).reshape(shape)
  return y.astype(x.dtype)


def rotary_tables(positions: Array, head_dim: int, theta: float,
                  max_position: int | None = None) -> tuple[Array, Array]:
  """The cosines and sines of `rotary`'s angles, `[B, L, 1, Dh/2]` each.

  A forward pass makes them once for all its layers (`apply_rotary`).
  With `max_position`, a static bound on the positions, the angles of
  positions 0 .. max_position - 1 are tabulated (a constant, which XLA
  folds at compile time) and each position picks its row. Computed from
  the positions (without `max_position`), they may be fused by XLA into
  every layer's rotations and recomputed for every head, as they were
  before the table (about 2% of the update of benchmarks/gkd_step.py on a
  CPU).

  Args:
    positions: integer positions [B, L].
    head_dim: Dh, even.
    theta: base frequency (`rope_theta`).
    max_position: None, or an int above every position (a position at or
      above it gets NaN; positions are never negative).

  Returns:
    `(cos, sin)`, float32 `[B, L, 1, Dh/2]`.
  """
  inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32)
                              / head_dim))
  if max_position is None:
    angles = positions.astype(jnp.float32)[..., None] * inv_freq
    cos, sin = jnp.cos(angles), jnp.sin(angles)  # [B, L, Dh/2]
  else:
    angles = jnp.arange(max_position, dtype=jnp.float32)[:, None] * inv_freq
    cos, sin = (jnp.take(table, positions, axis=0, mode="fill")
                for table in (jnp.cos(angles), jnp.sin(angles)))
  return cos[:, :, None, :], sin[:, :, None, :]


def apply_rotary(x: Array, tables: tuple[Array, Array]) -> Array:
  """`rotary` with the angles' `rotary_tables` given, [B, L, heads, Dh]."""
  cos, sin = tables
  dh = x.shape[-1]
  x1 = x[..., : dh // 2].astype(jnp.float32)
  x2 = x[..., dh // 2:].astype(jnp.float32)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x.dtype)


def rotary(x: Array, positions: Array, theta: float) -> Array:
  """Rotary position embedding in Hugging Face's `rotate_half` layout.

  The first and second halves of each head are the two coordinates of every
  rotated pair: `x * cos + rotate_half(x) * sin`, `rotate_half([a, b]) =
  [-b, a]`, frequencies `theta ** (-2i / Dh)`. See Su et al. 2021, RoFormer
  (https://arxiv.org/abs/2104.09864), Eq. 34.

  Args:
    x: queries or keys [B, L, heads, Dh].
    positions: integer positions [B, L].
    theta: base frequency (`rope_theta`).

  Returns:
    Rotated `x` [B, L, heads, Dh] in the dtype of `x`.
  """
  return apply_rotary(x, rotary_tables(positions, x.shape[-1], theta))


class Linear(hk.Linear):
  """`hk.Linear` (same parameters, same `x @ w + b`) on a 2-D view.

  The leading axes of `x` [..., D_in] are merged into one before the
  product, so the weight's gradient in the backward pass is one plain
  `[D_in, rows] x [rows, D_out]` product. Left 3-D, that gradient
  contracts over two batch axes, and XLA's CPU backend writes a transposed
  copy of the output's gradient for it (benchmarks/README.md, "Weight
  gradients as plain products"). The forward values are the same.
  """

  def __call__(self, x: Array, **kwargs) -> Array:
    out = super().__call__(as_rows(x), **kwargs)  # [R, D_out]
    return out.reshape(*x.shape[:-1], self.output_size)


def as_rows(x: Array) -> Array:
  """`x` [..., D] as a matrix [prod(...), D] (a free reshape)."""
  return x.reshape(-1, x.shape[-1])


def unembed(hidden: Array, unembedding: Array) -> Array:
  """Float32 logits `[..., V]` of `hidden [..., D] @ unembedding [D, V]`.

  On a 2-D view of `hidden`, as `Linear`: the unembedding's gradient is then
  one plain product, not a contraction over two batch axes.
  """
  logits = jnp.matmul(as_rows(hidden), unembedding,
                      preferred_element_type=jnp.float32)  # [R, V]
  return logits.reshape(*hidden.shape[:-1], unembedding.shape[-1])


def _linear(size: int, bias: bool, name: str) -> Linear:
  return Linear(size, with_bias=bias, name=name)


@jax.custom_jvp
def softmax(x: Array) -> Array:
  """`jax.nn.softmax(x, axis=-1)`, differentiated as `y * (dx - sum(y dx))`.

  The values are jax.nn.softmax's. Its default derivative goes through the
  quotient `exp(x - max) / sum`, which leaves the backward pass the row sums
  broadcast to the scores' full size; this one needs only `y`.
  """
  unnormalized = jnp.exp(x - jax.lax.stop_gradient(x.max(-1, keepdims=True)))
  return unnormalized / unnormalized.sum(-1, keepdims=True)


@softmax.defjvp
def _softmax_jvp(primals, tangents):
  (x,), (x_dot,) = primals, tangents
  y = softmax(x)
  return y, y * (x_dot - (y * x_dot).sum(-1, keepdims=True))


def attention(
    config: ModelConfig,
    x: Array,
    rope: tuple[Array, Array] | None,
    mask: Array,
    past: tuple[Array, Array, Array] | None,
    queries: int | None = None,
) -> tuple[Array, Array, Array]:
  """Causal grouped-query self-attention over cached slots and new tokens.

  Args:
    config: the model configuration.
    x: normed inputs [B, L, D] of the L new tokens.
    rope: the new tokens' `rotary_tables` (rotary models), else None.
    mask: [B, L] bool, which new tokens are real (False = padding).
    past: None, or `(keys [B, K, Dh, S], values [B, K, S, Dh], mask [B, S])`
      of earlier tokens; every valid slot precedes all new tokens.
    queries: None (every new token queries), or Q in [1, L] without `past`:
      only the last Q tokens query, over the keys of all L, and `out` is
      theirs alone (each row's output is that of the full call).

  Returns:
    `(out [B, Q, D], keys [B, L, K, Dh], values [B, L, K, Dh])` (Q = L
    unless `queries` is set), the keys and values being those of the new
    tokens, for the cache.
  """
  b, l, _ = x.shape
  n = l if queries is None else queries
  if past is not None and n != l:
    raise ValueError(f"queries={queries} needs past=None")
  h, k_heads, dh = config.n_heads, config.n_kv_heads, config.head_dim
  with hk.name_scope("attention"):
    q = _linear(h * dh, config.qkv_bias, "query")(x[:, l - n:])
    q = q.reshape(b, n, h, dh)
    k = _linear(k_heads * dh, config.qkv_bias, "key")(x)
    v = _linear(k_heads * dh, config.qkv_bias, "value")(x)
    k = k.reshape(b, l, k_heads, dh)
    v = v.reshape(b, l, k_heads, dh)
    if rope is not None:
      q = apply_rotary(q, tuple(t[:, l - n:] for t in rope))
      k = apply_rotary(k, rope)
    g = h // k_heads
    # Heads first: query head j * G + g reads key/value head j (HF's
    # repeat_kv layout), and every product below is a plain one per head,
    # [G L, Dh] x [Dh, L] or [G L, L] x [L, Dh]. (Left [B, L, K, G, Dh],
    # XLA's CPU backend transposed the scores, and for the cached keys
    # picked a product with no bfloat16 x bfloat16 -> float32 kernel.)
    q = jnp.transpose(q.reshape(b, n, k_heads, g, dh), (0, 2, 3, 1, 4))
    q = q.reshape(b, k_heads, g * n, dh)  # [B, K, G Q, Dh]
    # Query i is token L - Q + i: it sees the keys of tokens 0 .. L - Q + i.
    causal = jnp.tril(jnp.ones((n, l), dtype=bool), k=l - n)  # [Q, L]
    allowed = causal[None] & mask[:, None, :]  # [B, Q, L]
    # The mask as an additive bias: s * scale + MASKED rounds to MASKED, so
    # the values are those of a select, and the backward pass needs no mask
    # of the scores' size.
    bias = jnp.where(allowed, np.float32(0.0), np.float32(MASKED))
    bias = jnp.tile(bias, (1, g, 1))[:, None]  # [B, 1, G Q, L]
    scale = np.float32(1.0 / np.sqrt(dh))
    scores = jnp.einsum("bkid,bkjd->bkij", q, jnp.transpose(k, (0, 2, 1, 3)),
                        preferred_element_type=jnp.float32)  # [B, K, G Q, L]
    scores = scores * scale + bias
    if past is not None:
      # The cache is head-major ([B, K, Dh, S] keys, [B, K, S, Dh] values),
      # so these products read it in place: scoring cached slots and new
      # tokens separately and joining the (small) scores avoids copying the
      # whole cache every step.
      past_k, past_v, past_mask = past
      past_scores = jnp.einsum("bkid,bkds->bkis", q, past_k.astype(q.dtype),
                               preferred_element_type=jnp.float32)
      past_scores = jnp.where(past_mask[:, None, None, :],
                              past_scores * scale, MASKED)  # [B, K, G L, S]
      scores = jnp.concatenate([past_scores, scores], axis=-1)
    probs = softmax(scores).astype(v.dtype)  # [.., S+L]
    s_past = scores.shape[-1] - l
    out = jnp.einsum("bkij,bkjd->bkid", probs[..., s_past:],
                     jnp.transpose(v, (0, 2, 1, 3)))  # [B, K, G Q, Dh]
    if past is not None:
      out = out + jnp.einsum("bkis,bksd->bkid", probs[..., :s_past],
                             past_v.astype(v.dtype))
    out = jnp.transpose(out.reshape(b, k_heads, g, n, dh), (0, 3, 1, 2, 4))
    out = _linear(config.d_model, config.out_bias, "out")(
        out.reshape(b, n, h * dh))
  return out, k, v


ACTIVATIONS = {
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
}


def mlp(config: ModelConfig, x: Array) -> Array:
  """`down(act(gate(x)) * up(x))` (gated) or `down(act(up(x)))`, [B, L, D]."""
  act = ACTIVATIONS[config.activation]
  with hk.name_scope("mlp"):
    up = _linear(config.d_ff, config.mlp_bias, "up")(x)  # [B, L, F]
    if config.gated_mlp:
      # SwiGLU: the activation goes on the gate, the up projection is linear.
      gate = _linear(config.d_ff, config.mlp_bias, "gate")(x)  # [B, L, F]
      hidden = act(gate) * up
    else:
      hidden = act(up)
    return _linear(config.d_model, config.mlp_bias, "down")(hidden)
