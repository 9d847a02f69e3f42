"""Decoder-only language model: `make_model(config) -> LanguageModel`.

`LanguageModel` is a NamedTuple of pure functions (plus its `config`):

    params = model.init(key)
    logits = model.apply(params, tokens, mask)       # [B, L, V] float32
    hidden = model.hidden(params, tokens, mask)      # [B, L, D] final-normed
    logits = hidden @ model.unembedding(params)      # [D, V]

Padding. Batches are left-padded: `mask[B, L]` is 1/True on real tokens. A
token's position is the number of real tokens before it
(`cumsum(mask) - 1`, clipped at 0), and padded keys are never attended to,
so each row's logits at its real positions equal those of the same row
without padding. Logits at padded positions are finite but meaningless.
Learned position tables (GPT-2) hold `max_positions` rows; positions past
the table are clamped by the gather, not checked.

Layers are stacked (`hk.layer_stack`): every per-layer parameter has a
leading [n_layers] axis and the layers run in a `lax.scan`, so compile time
does not grow with depth.

Unrolled layers (`unroll`, a static argument of `hidden` and `apply`). A
backward pass through the scan keeps each layer's intermediates in stacked
buffers, which XLA zero-fills and writes and reads by dynamic slices;
`unroll=True` runs the same layers as straight-line code (same parameters,
same values) and needs none of that: the agents use it for the student's
differentiated pass (`gkdrl.agents.base.student_unroll`). It compiles in
time growing with depth, and a forward pass alone is no faster unrolled,
so the scan stays the default. It needs `remat="none"`: unrolled, XLA
keeps the recomputed activations alive and remat saves nothing.

Rematerialisation (`remat`, a static argument of `hidden` and `apply`, one
of REMAT_MODES). Without it the backward pass keeps every layer's
intermediates, the [B, H, L, L] attention scores and probabilities
included. "dots" keeps the weight projections' outputs (matrix products
without batch dimensions) and recomputes attention and the elementwise
operations; "full" keeps each layer's input and recomputes the whole layer.
Values and gradients do not change; the README ("Runners") gives the
memory each mode saves in a GKD update.
Sampling (`prefill`, `decode`) never rematerialises.

The last positions only (`last`, a static argument of `hidden` and
`apply`). `hidden(params, tokens, mask, last=Q)` returns the rows of the
last Q tokens alone, `hidden(params, tokens, mask)[:, -Q:]` up to float
rounding, with less work: the last layer computes keys and values for
every token but queries, attention output and MLP for those Q only (the
update reads the hidden states at the completion positions, so the
prompt's share of that layer is never needed). Unrolled, the last layer
runs after the others; in the scan, a conditional in the scan's body picks
its work by the layer's index, so that the weights stay stacked (taking
the last layer out of the stack copied the other layers' weights: a
forward pass's scratch memory grew by their size). Differentiated, that
conditional keeps the residuals of both its branches for every layer, so
with a remat mode (the scan's differentiated passes) the last layer runs
in full and its rows are sliced.

KV cache (used by gkdrl.sampling):

    cache = model.init_cache(batch_size=B, max_length=S, dtype=jnp.float32)
    logits, cache = model.prefill(params, prompt[B, P], prompt_mask[B, P],
                                  cache)                  # [B, P, V]
    logits, cache = model.decode(params, token[B], cache)  # [B, V]

`KVCache` is a pytree with fixed shapes, so it can be the carry of
`lax.while_loop`. Slots are filled left to right from `cache.index`, one
slot per token of every row: `prefill` writes P slots (padding included,
marked invalid in `cache.mask`), each `decode` call writes one valid slot per
row at that row's next position (`cache.next_positions`), and every query
attends to the valid slots before it. `prefill` + n `decode` steps give the
same logits as one `apply` on the concatenated left-padded sequence.
`prefill` may be called on a non-empty cache (chunked prompts). Writing
beyond `max_length` is not checked (it cannot be inside jit): size the
cache for P plus the number of decode steps.

Fast decoding loops (gkdrl/networks/decoding.py). A `decode` on the stacked
parameters runs the layers in a scan that copies every layer's weights and
cache slice per token. Loops over tokens instead prepare once, outside the
loop, and decode on the prepared forms (same results up to float rounding):

    fast = model.prepare_decode(params)   # per-layer weights (a copy)
    cache = model.unstack_cache(cache)    # keys/values as N arrays
    logits, cache = model.decode(fast, token, cache)  # unrolled, in place

`decode` and `prefill` accept either form of parameters and cache and return
the cache in the form they were given.
"""

import functools
import math
from typing import Any, Callable, NamedTuple

import chex
import haiku as hk
import jax
import jax.numpy as jnp

from gkdrl.networks import decoding
from gkdrl.networks import layers
from gkdrl.networks.config import ModelConfig

Array = jax.Array
Params = hk.Params

# Haiku module paths of the parameters that live outside the layer stack.
EMBED = "lm/embed"
POSITION_EMBED = "lm/position_embed"
FINAL_NORM = "lm/final_norm"
UNEMBED = "lm/unembed"
LAYERS = "lm/layers"
# The last layer's parameters while `hidden`/`apply` run with `last` (its
# rows of the LAYERS arrays, moved here by `_split_last_layer`).
LAST_LAYER = "lm/last_layer"

# `remat` mode -> the `jax.checkpoint` policy of each layer (None: no remat).
REMAT_POLICIES = {
    "none": None,
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "full": jax.checkpoint_policies.nothing_saveable,
}
REMAT_MODES = tuple(REMAT_POLICIES)


class KVCache(NamedTuple):
  """Keys and values of every processed token, per layer.

  N layers, B rows, S = max_length slots, K key/value heads, Dh head width.
  `keys` and `values` are stacked arrays, or in the per-layer form of
  `LanguageModel.unstack_cache` tuples of N arrays ([B, K, Dh, S] keys,
  [B, K, S, Dh] values). The keys are stored features-first, so that the
  decode step's scores `q [G, Dh] x keys [Dh, S]` and its output `probs
  [G, S] x values [S, Dh]` are both plain products per head
  (benchmarks/README.md, "The keys cached features-first").
  """

  keys: Any  # [N, B, K, Dh, S] in the cache dtype (head-major)
  values: Any  # [N, B, K, S, Dh] in the cache dtype (head-major)
  mask: Array  # [B, S] bool, slot holds a real (non-padding) token
  index: Array  # [] int32, next slot to write (same for every row)
  next_positions: Array  # [B] int32, position of each row's next token


class LanguageModel(NamedTuple):
  """A decoder-only language model as pure functions. See module docstring."""

  config: ModelConfig
  init: Callable[[Array], Params]
  apply: Callable[..., Array]
  hidden: Callable[..., Array]
  unembedding: Callable[[Params], Array]
  init_cache: Callable[..., KVCache]
  prefill: Callable[..., tuple[Array, KVCache]]
  decode: Callable[..., tuple[Array, KVCache]]
  prepare_decode: Callable[[Params], decoding.DecodeParams]
  unstack_cache: Callable[[KVCache], KVCache]
  stack_cache: Callable[[KVCache], KVCache]

  @property
  def is_encoder_decoder(self) -> bool:
    return False


def _check_remat(remat: str) -> None:
  if not isinstance(remat, str) or remat not in REMAT_POLICIES:
    raise ValueError(f"remat={remat!r} is not recognised; allowed values: "
                     f"{', '.join(repr(m) for m in REMAT_MODES)}.")


def check_unroll(unroll: bool, remat: str) -> None:
  if not isinstance(unroll, bool):
    raise ValueError(f"unroll must be True or False, got {unroll!r}")
  if unroll and remat != "none":
    # Measured: unrolled, XLA keeps the recomputed activations alive as long
    # as the scan's "none" does, CSE barriers or not.
    raise ValueError(f"unroll=True needs remat='none' (got remat={remat!r}): "
                     "rematerialisation saves memory only in the scan")


def layer_stack(n_layers: int, unroll: bool, **kwargs):
  """`hk.layer_stack` named "layers": a scan, or with `unroll` the layers
  as straight-line code (shared with gkdrl/networks/t5.py)."""
  return hk.layer_stack(n_layers, unroll=n_layers if unroll else 1,
                        name="layers", **kwargs)


def _decoder(config: ModelConfig, tokens: Array, positions: Array,
             mask: Array, past: tuple[Array, Array, Array] | None,
             remat: str = "none", unroll: bool = False,
             last: int | None = None):
  """Haiku body: final-normed hidden states and the new keys/values.

  Args:
    config: the model configuration.
    tokens: [B, L] int32 token ids.
    positions: [B, L] int32 positions; without `past`, each below L (as
      `_positions` makes them).
    mask: [B, L] bool, real tokens.
    past: None or `(keys [N, B, K, Dh, S], values [N, B, K, S, Dh],
      mask [B, S])`.
    remat: one of REMAT_MODES (see the module docstring).
    unroll: run the layers unrolled instead of in a scan (see the module
      docstring).
    last: None, or Q in [1, L) without `past`: the last layer computes
      queries, attention output and MLP for the last Q tokens only, whose
      rows alone `hidden` holds; keys and values are then not returned
      (None). Unrolled, with `_split_last_layer`'s parameters: the first
      N - 1 layers run in LAYERS and the last one in LAST_LAYER. In the
      scan (remat "none"), with the stacked parameters: a conditional in
      the scan's body runs the last layer's Q rows.

  Returns:
    `(hidden [B, L or Q, D], keys [N, B, L, K, Dh], values [N, B, L, K, Dh],
    unembedding [D, V])`.
  """
  # Haiku's initializers only give the structure; see `init` below.
  with hk.name_scope("lm"):
    embed = hk.Embed(config.vocab_size, config.d_model, name="embed")
    x = embed(tokens)  # [B, L, D]
    if config.position == "learned":
      x = x + hk.Embed(config.max_positions, config.d_model,
                       name="position_embed")(positions)

    # Once for all layers; without a cache, positions are below L.
    rope = (layers.rotary_tables(positions, config.head_dim, config.rope_theta,
                                 tokens.shape[1] if past is None else None)
            if config.position == "rope" else None)

    def layer(x, *past_layer, queries=None):
      past_kv = (past_layer[0], past_layer[1], past[2]) if past_layer else None
      h = layers.Norm(config, name="attn_norm")(x)
      attn_out, k, v = layers.attention(config, h, rope, mask, past_kv,
                                        queries)
      x = x[:, x.shape[1] - attn_out.shape[1]:] + attn_out
      x = x + layers.mlp(config, layers.Norm(config, name="mlp_norm")(x))
      return x, (k, v)

    body = layer
    if REMAT_POLICIES[remat] is not None:
      # Checkpointing the scan's body (not the whole stack) makes the
      # backward pass store only what the policy saves per layer and
      # rebuild one layer's intermediates at a time. Under a scan, XLA's CSE
      # cannot merge the recomputation back into the forward pass, so
      # jax.checkpoint's CSE barriers are not needed (they slow GPU code).
      body = hk.remat(layer, policy=REMAT_POLICIES[remat], prevent_cse=False)
    if last is None:
      stack = layer_stack(config.n_layers, unroll, with_per_layer_inputs=True)
      past_layers = () if past is None else (past[0], past[1])
      x, (keys, values) = stack(body)(x, *past_layers)
    elif not unroll:
      # In the scan every layer's weights stay in the stack (slicing the
      # last layer's off would copy the others'): the layer's index picks,
      # in a conditional, the last layer's work at the last Q rows alone.
      # Its other rows keep their input, sliced off after the scan. (remat
      # is "none": `_run`.)
      def every_row(x):
        return layer(x)[0]

      def last_rows(x):
        return jnp.concatenate(
            [x[:, :x.shape[1] - last], layer(x, queries=last)[0]], axis=1)

      def split_body(x, index):
        return hk.cond(index < config.n_layers - 1, every_row, last_rows,
                       x), None

      stack = layer_stack(config.n_layers, unroll, with_per_layer_inputs=True)
      x, _ = stack(split_body)(x, jnp.arange(config.n_layers))
      x = x[:, x.shape[1] - last:]
      keys = values = None
    else:
      if config.n_layers > 1:
        stack = layer_stack(config.n_layers - 1, unroll,
                            with_per_layer_inputs=True)
        x, _ = stack(body)(x)
      # Not a stack: the last layer changes the carry's shape. (Unrolled,
      # so remat is "none": `check_unroll`.)
      with hk.name_scope(LAST_LAYER.split("/")[-1]):
        x, _ = layer(x, queries=last)
      keys = values = None
    x = layers.Norm(config, name="final_norm")(x)
    if config.tie_embeddings:
      unembedding = embed.embeddings.T
    else:
      with hk.name_scope("unembed"):
        unembedding = hk.get_parameter(
            "w", [config.d_model, config.vocab_size], x.dtype,
            init=jnp.zeros)
  return x, keys, values, unembedding


def _split_last_layer(params: Params) -> Params:
  """`params` with the last row of every LAYERS array moved to LAST_LAYER
  (as `_decoder` reads them with `last`); a model of one layer keeps no
  LAYERS entries."""
  split = {}
  for name, module in params.items():
    if not name.startswith(LAYERS + "/"):
      split[name] = module
      continue
    rest = name[len(LAYERS):]
    split[LAST_LAYER + rest] = {k: w[-1] for k, w in module.items()}
    if any(w.shape[0] > 1 for w in module.values()):
      split[name] = {k: w[:-1] for k, w in module.items()}
  return split


def check_last(last: int | None, length: int) -> None:
  """`last` of `hidden`/`apply`: None or an int in [0, length]."""
  if last is None:
    return
  if isinstance(last, bool) or not isinstance(last, int):
    raise ValueError(f"last must be None or an int, got {last!r}")
  if not 0 <= last <= length:
    raise ValueError(f"last must be in [0, {length}] (the number of "
                     f"tokens), got {last}")


def _positions(mask: Array, start: Array | int = 0) -> Array:
  """Positions [B, L] of left-padded tokens: start + cumsum(mask) - 1 >= 0."""
  return jnp.maximum(
      start + jnp.cumsum(mask.astype(jnp.int32), axis=-1) - 1, 0)


@functools.lru_cache(maxsize=256)
def make_model(config: ModelConfig) -> LanguageModel:
  """Builds the pure functions of the model described by `config`.

  Equal configurations give the same object, so the programs compiled for
  one model (the sampler's, the evaluator's: the model is their static
  argument) serve every later model of that configuration, in a new run or
  a new test of the same process.

  Args:
    config: the model configuration.

  Returns:
    A `LanguageModel`; see the module docstring for each function.
  """
  transformed = hk.without_apply_rng(hk.transform(
      lambda *args, **kwargs: _decoder(config, *args, **kwargs)))

  tokens = jnp.zeros((1, 1), jnp.int32)
  shapes = jax.eval_shape(transformed.init, jax.random.key(0), tokens,
                          tokens, tokens == 0, None)

  def init(key: Array) -> Params:
    """Random float32 parameters: N(0, 0.02^2) embeddings, N(0, 1/fan_in)
    weights, unit norm scales, zero biases and offsets.

    All values come from one flat normal draw: one random-bits kernel per
    model instead of one per parameter makes this much faster to compile.
    """
    leaves, treedef = jax.tree_util.tree_flatten_with_path(shapes)
    sizes = [math.prod(leaf.shape) for _, leaf in leaves]
    flat = jax.random.normal(key, (sum(sizes),), jnp.float32)
    values, offset = [], 0
    for (path, leaf), size in zip(leaves, sizes):
      name = path[-1].key
      draw = flat[offset:offset + size].reshape(leaf.shape)
      offset += size
      if name == "scale":
        values.append(jnp.ones(leaf.shape, jnp.float32))
      elif name in ("offset", "b"):
        values.append(jnp.zeros(leaf.shape, jnp.float32))
      elif name == "embeddings":
        values.append(0.02 * draw)
      else:  # "w" [..., in, out]
        values.append(draw * leaf.shape[-2] ** -0.5)
    return jax.tree.unflatten(treedef, values)

  def _run(params, tokens, positions, mask, past, remat="none",
           unroll=False, last=None):
    chex.assert_rank(tokens, 2)
    chex.assert_equal_shape([tokens, mask, positions])
    check_last(last, tokens.shape[1])
    # Unrolled, each layer's weights are sliced out of the stack anyway, so
    # moving the last layer's costs nothing. In the scan, slicing off the
    # first N - 1 layers' weights would copy them: there they stay stacked
    # and a conditional picks the last layer's work (`_decoder`), without
    # remat only: differentiated, the conditional keeps the residuals of
    # both its branches for every layer (a remat mode's pass keeps its full
    # last layer, and its rows are sliced below).
    partial = (last is not None and 0 < last < tokens.shape[1]
               and (unroll or remat == "none"))
    split = unroll and partial
    h, keys, values, w = transformed.apply(
        _split_last_layer(params) if split else params, tokens, positions,
        mask.astype(bool), past, remat=remat, unroll=unroll,
        last=last if partial else None)
    if last is not None:
      h = h[:, h.shape[1] - last:]
    return h, keys, values, w

  def hidden(params: Params, tokens: Array, mask: Array | None = None, *,
             remat: str = "none", unroll: bool = False,
             last: int | None = None) -> Array:
    """Final-normed hidden states [B, L, D] of tokens [B, L] (left-padded).

    `remat` (REMAT_MODES) sets what a backward pass stores per layer;
    `unroll` runs the layers unrolled; `last` = Q in [0, L] returns the last
    Q tokens' rows [B, Q, D] only, with less work unless a remat mode is
    set (see the module docstring).
    """
    _check_remat(remat)
    check_unroll(unroll, remat)
    mask = jnp.ones(tokens.shape, bool) if mask is None else mask.astype(bool)
    h, _, _, _ = _run(params, tokens, _positions(mask), mask, None, remat,
                      unroll, last)
    return h

  def unembedding(params: Params) -> Array:
    """The [D, V] matrix with logits = hidden @ unembedding."""
    if config.tie_embeddings:
      return params[EMBED]["embeddings"].T
    return params[UNEMBED]["w"]


  def apply(params: Params, tokens: Array, mask: Array | None = None, *,
            remat: str = "none", unroll: bool = False,
            last: int | None = None) -> Array:
    """Float32 logits [B, L, V] of tokens [B, L] with optional mask [B, L].

    `remat`, `unroll` and `last` ([B, Q, V]) as in `hidden`.
    """
    _check_remat(remat)
    check_unroll(unroll, remat)
    mask = jnp.ones(tokens.shape, bool) if mask is None else mask.astype(bool)
    h, _, _, w = _run(params, tokens, _positions(mask), mask, None, remat,
                      unroll, last)
    return layers.unembed(h, w)

  def init_cache(batch_size: int, max_length: int,
                 dtype: Any = jnp.float32) -> KVCache:
    """An empty cache for `batch_size` rows of up to `max_length` tokens."""
    if batch_size <= 0 or max_length <= 0:
      raise ValueError(f"batch_size={batch_size} and max_length={max_length} "
                       "must be positive.")
    shape = (config.n_layers, batch_size, config.n_kv_heads, max_length,
             config.head_dim)
    keys_shape = shape[:3] + (config.head_dim, max_length)
    cache = KVCache(
        keys=jnp.zeros(keys_shape, dtype), values=jnp.zeros(shape, dtype),
        mask=jnp.zeros((batch_size, max_length), bool),
        index=jnp.zeros((), jnp.int32),
        next_positions=jnp.zeros((batch_size,), jnp.int32))
    # Inside a compiled sampler, XLA would otherwise constant-fold the
    # prefill's attention over this all-masked cache (a [B, K, G, P, S]
    # constant, seconds of compile time); the barrier keeps it a value.
    return jax.lax.optimization_barrier(cache)

  def prefill(params: Params, tokens: Array, mask: Array,
              cache: KVCache) -> tuple[Array, KVCache]:
    """Runs tokens [B, P] (left-padded, mask [B, P]) and caches them.

    Returns:
      `(logits [B, P, V] float32, cache)` with slots index..index+P-1 written.
    """
    if isinstance(cache.keys, tuple):
      logits, cache = prefill(params, tokens, mask,
                              decoding.stack_cache(cache))
      return logits, decoding.unstack_cache(cache)
    if isinstance(params, decoding.DecodeParams):
      raise TypeError("prefill takes the model's parameters, not the "
                      "DecodeParams of prepare_decode.")
    mask = mask.astype(bool)
    chex.assert_equal_shape_prefix([tokens, cache.mask], 1)
    positions = _positions(mask, cache.next_positions[:, None])
    h, keys, values, w = _run(params, tokens, positions, mask,
                              (cache.keys, cache.values, cache.mask))
    start = cache.index
    # [N, B, P, K, Dh] -> the cache's [N, B, K, Dh, P] and [N, B, K, P, Dh].
    keys = jnp.transpose(keys, (0, 1, 3, 4, 2)).astype(cache.keys.dtype)
    values = jnp.swapaxes(values, 2, 3).astype(cache.values.dtype)
    new_cache = KVCache(
        keys=jax.lax.dynamic_update_slice(cache.keys, keys,
                                          (0, 0, 0, 0, start)),
        values=jax.lax.dynamic_update_slice(cache.values, values,
                                            (0, 0, 0, start, 0)),
        mask=jax.lax.dynamic_update_slice(cache.mask, mask, (0, start)),
        index=start + tokens.shape[1],
        next_positions=cache.next_positions + jnp.sum(mask, axis=-1,
                                                      dtype=jnp.int32))
    return layers.unembed(h, w), new_cache

  def decode(params: Params, tokens: Array,
             cache: KVCache) -> tuple[Array, KVCache]:
    """Runs one real token per row, tokens [B]; returns logits [B, V].

    `params` are the model's or `prepare_decode`'s; `cache` is stacked or
    per layer (see the module docstring).
    """
    chex.assert_rank(tokens, 1)
    if isinstance(params, decoding.DecodeParams) or isinstance(cache.keys,
                                                               tuple):
      if not isinstance(params, decoding.DecodeParams):
        params = decoding.prepare(config, params)
      return decoding.decode(config, params, tokens.astype(jnp.int32), cache)
    logits, cache = prefill(params, tokens[:, None],
                            jnp.ones((tokens.shape[0], 1), bool), cache)
    return logits[:, 0], cache

  return LanguageModel(
      config=config, init=init, apply=apply, hidden=hidden,
      unembedding=unembedding, init_cache=init_cache, prefill=prefill,
      decode=decode,
      prepare_decode=lambda params: decoding.prepare(config, params),
      unstack_cache=decoding.unstack_cache, stack_cache=decoding.stack_cache)
