"""T5 encoder-decoder model: `make_t5(config) -> EncoderDecoderModel`.

`EncoderDecoderModel` is a NamedTuple of pure functions (plus its `config`),
mirroring `LanguageModel` (gkdrl/networks/model.py):

    params = model.init(key)
    enc = model.encode(params, src_tokens, src_mask)        # [B, S, D]
    hidden = model.decoder_hidden(params, enc, src_mask, tokens, mask)
    logits = hidden @ model.unembedding(params)             # [B, T, V]
    logits = model.apply(params, src_tokens, src_mask, tokens, mask)

`tokens` [B, T] are the decoder's inputs: the decoder start token followed
by the target shifted right; logits[:, t] predict the target's token t.
Masks are 1/True on real tokens. T5 has no absolute positions: its
attention bias depends only on key slot minus query slot, so padding may sit
on either side of the source or of the decoder tokens (Hugging Face pads on
the right) and padded keys are never attended to; a row's logits at its
real positions equal those of the same row without padding. For tied
(v1.0) models `decoder_hidden` already carries the d_model**-0.5 output
scaling, so `hidden @ unembedding` is always the logits.

Layers are stacked (`hk.layer_stack`, a leading [N] axis on every per-layer
parameter) and `remat` (REMAT_MODES) and `unroll`, static arguments of
`encode`, `decoder_hidden`, `hidden` and `apply`, work as for
`LanguageModel`.

Sampling keeps the encoder output's cross-attention keys/values, computed
once, and a decoder self-attention cache in one fixed-shape pytree:

    cache = model.init_cache(batch_size=B, max_length=T, source_length=S)
    logits, cache = model.prefill(params, src_tokens, src_mask,
                                  tokens, mask, cache)   # [B, T0, V]
    logits, cache = model.decode(params, token, cache)   # [B, V]

`prefill` runs the encoder, stores every layer's cross-attention keys and
values and caches the decoder prefix `tokens` [B, T0] (usually the start
token); each `decode` caches one more token per row. `prefill` + n `decode`
steps give the logits of one `apply` on the concatenated decoder tokens.
Writing beyond `max_length` is not checked (it cannot be inside jit).

A loop of `decode` calls runs fastest on prepared weights and a per-layer
cache (gkdrl/networks/t5_decoding.py), as for `LanguageModel`:

    fast = model.prepare_decode(params)   # per-layer decoder weights (a copy)
    cache = model.unstack_cache(cache)    # keys/values as N arrays each
    logits, cache = model.decode(fast, token, cache)
"""

import functools
import math
from typing import Any, Callable, NamedTuple

import chex
import haiku as hk
import jax
import jax.numpy as jnp

from gkdrl import validation
from gkdrl.networks import layers
from gkdrl.networks import model as model_lib
from gkdrl.networks import t5_decoding
from gkdrl.networks import t5_layers as tl
from gkdrl.networks.t5_config import T5Config

Array = jax.Array
Params = hk.Params

SHARED = "t5/shared"
UNEMBED = "t5/unembed"
ENCODER_LAYERS = "t5/encoder/layers"
DECODER_LAYERS = "t5/decoder/layers"


class T5Cache(NamedTuple):
  """Decoder self-attention keys/values and the cross-attention inputs.

  N decoder layers, B rows, S = max_length decoder slots, Ss source tokens,
  H heads, Dh head width. Head-major, as `KVCache`; the four key/value
  fields are tuples of N arrays [B, H, ., Dh] in the per-layer form of
  `unstack_cache`.
  """

  keys: Array  # [N, B, H, S, Dh] self-attention keys, cache dtype
  values: Array  # [N, B, H, S, Dh] self-attention values, cache dtype
  mask: Array  # [B, S] bool, slot holds a real decoder token
  index: Array  # [] int32, next slot to write (same for every row)
  cross_keys: Array  # [N, B, H, Ss, Dh] keys of the encoder output
  cross_values: Array  # [N, B, H, Ss, Dh] values of the encoder output
  source_mask: Array  # [B, Ss] bool, real source tokens


class EncoderDecoderModel(NamedTuple):
  """An encoder-decoder model as pure functions. See module docstring."""

  config: T5Config
  init: Callable[[Array], Params]
  encode: Callable[..., Array]
  decoder_hidden: Callable[..., Array]
  hidden: Callable[..., Array]
  apply: Callable[..., Array]
  unembedding: Callable[[Params], Array]
  init_cache: Callable[..., T5Cache]
  prefill: Callable[..., tuple[Array, T5Cache]]
  decode: Callable[..., tuple[Array, T5Cache]]
  prepare_decode: Callable[[Params], t5_decoding.T5DecodeParams]
  unstack_cache: Callable[[T5Cache], T5Cache]
  stack_cache: Callable[[T5Cache], T5Cache]

  @property
  def is_encoder_decoder(self) -> bool:
    return True


def _remat(layer, remat: str):
  policy = model_lib.REMAT_POLICIES[remat]
  if policy is None:
    return layer
  return hk.remat(layer, policy=policy, prevent_cse=False)


def _encoder(config: T5Config, src_tokens: Array, src_mask: Array,
             remat: str, unroll: bool = False) -> Array:
  """Haiku body: the final-normed encoder output [B, S, D]."""
  with hk.name_scope("t5"):
    x = tl.embedding_table(config)[src_tokens]  # [B, S, D]
    with hk.name_scope("encoder"):
      positions = jnp.arange(src_tokens.shape[1])
      bias = tl.position_bias(config, positions, positions,
                              bidirectional=True)  # [H, S, S]
      allowed = src_mask[:, None, :]  # [B, 1, S]

      def layer(x):
        h = tl.norm(config, x, "self_attn_norm")
        with hk.name_scope("self_attention"):
          k, v = tl.project_kv(config, h)
          x = x + tl.attend(config, tl.query(config, h), k, v, bias, allowed)
        return x + tl.mlp(config, tl.norm(config, x, "mlp_norm"))

      stack = model_lib.layer_stack(config.n_layers, unroll)
      x = stack(_remat(layer, remat))(x)
      return tl.norm(config, x, "final_norm")


def _decoder(config: T5Config, tokens: Array, mask: Array,
             encoder_out: Array | None, src_mask: Array,
             cache: T5Cache | None, remat: str = "none",
             unroll: bool = False):
  """Haiku body: decoder hidden states and what the cache needs.

  Without `cache` the decoder attends causally over `tokens` (training).
  With it, the tokens go to slots index..index+L-1 of the self-attention
  cache, and the cross-attention reads `encoder_out` when given (prefill)
  or the cached cross keys/values (decode).

  Returns:
    `(hidden [B, L, D] (scaled for tied models), per-layer outputs)`: () in
    training; otherwise `(keys, values)` [N, B, H, S, Dh] of the updated
    cache, followed when `encoder_out` is given by the cross `(keys,
    values)` [N, B, H, Ss, Dh].
  """
  length = tokens.shape[1]
  with hk.name_scope("t5"):
    x = tl.embedding_table(config)[tokens]  # [B, L, D]
    with hk.name_scope("decoder"):
      if cache is None:
        q_pos = k_pos = jnp.arange(length)
        key_mask = mask
      else:
        q_pos = cache.index + jnp.arange(length)
        k_pos = jnp.arange(cache.mask.shape[1])
        key_mask = jax.lax.dynamic_update_slice(cache.mask, mask,
                                                (0, cache.index))
      bias = tl.position_bias(config, q_pos, k_pos,
                              bidirectional=False)  # [H, L, S]
      self_allowed = (k_pos[None, :] <= q_pos[:, None])[None] & (
          key_mask[:, None, :])  # [B, L, S]
      cross_allowed = src_mask[:, None, :]  # [B, 1, Ss]

      def layer(x, *per_layer):
        outputs = ()
        h = tl.norm(config, x, "self_attn_norm")
        with hk.name_scope("self_attention"):
          k, v = tl.project_kv(config, h)
          if cache is not None:  # the head-major [B, H, S, Dh] cache
            start = (0, 0, cache.index, 0)
            k = jax.lax.dynamic_update_slice(
                per_layer[0], _heads_first(k, per_layer[0].dtype), start)
            v = jax.lax.dynamic_update_slice(
                per_layer[1], _heads_first(v, per_layer[1].dtype), start)
            outputs = (k, v)
            k, v = _heads_first(k), _heads_first(v)  # [B, S, H, Dh]
          x = x + tl.attend(config, tl.query(config, h), k, v, bias,
                            self_allowed)
        h = tl.norm(config, x, "cross_attn_norm")
        with hk.name_scope("cross_attention"):
          if encoder_out is not None:
            ck, cv = tl.project_kv(config, encoder_out)
            if cache is not None:
              outputs = outputs + (_heads_first(ck, cache.cross_keys.dtype),
                                   _heads_first(cv, cache.cross_values.dtype))
          else:
            ck, cv = _heads_first(per_layer[2]), _heads_first(per_layer[3])
          x = x + tl.attend(config, tl.query(config, h), ck, cv, None,
                            cross_allowed)
        x = x + tl.mlp(config, tl.norm(config, x, "mlp_norm"))
        return x, outputs

      per_layer = () if cache is None else (cache.keys, cache.values)
      if cache is not None and encoder_out is None:
        per_layer = per_layer + (cache.cross_keys, cache.cross_values)
      stack = model_lib.layer_stack(config.n_decoder_layers, unroll,
                                    with_per_layer_inputs=True)
      x, outputs = stack(_remat(layer, remat))(x, *per_layer)
      x = tl.norm(config, x, "final_norm")
    if config.scale_decoder_outputs:
      x = x * config.d_model ** -0.5
    if not config.tie_embeddings:
      with hk.name_scope("unembed"):
        hk.get_parameter("w", [config.d_model, config.vocab_size], x.dtype,
                         init=jnp.zeros)
  return x, outputs


def _heads_first(x: Array, dtype: Any = None) -> Array:
  """Swaps axes 1 and 2 ([B, S, H, Dh] <-> [B, H, S, Dh]), casting."""
  return jnp.swapaxes(x, 1, 2).astype(dtype or x.dtype)


def _init_values(config: T5Config, shapes) -> Callable[[Array], Params]:
  """`init`: random parameters with Hugging Face's T5 scales."""

  def init(key: Array) -> Params:
    """Random float32 parameters from one flat normal draw (one random-bits
    kernel per model, fast to compile): unit norm scales, N(0, 1) shared
    embedding, N(0, 1/D) relative biases, N(0, 1/(D Dh)) query weights and
    N(0, 1/fan_in) other weights (head included)."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(shapes)
    sizes = [math.prod(leaf.shape) for _, leaf in leaves]
    flat = jax.random.normal(key, (sum(sizes),), jnp.float32)
    values, offset = [], 0
    for (path, leaf), size in zip(leaves, sizes):
      module, name = path[0].key, path[-1].key
      draw = flat[offset:offset + size].reshape(leaf.shape)
      offset += size
      if name == "scale":
        values.append(jnp.ones(leaf.shape, jnp.float32))
      elif module.endswith("relative_bias"):
        values.append(draw * config.d_model ** -0.5)
      elif name == "embeddings":
        values.append(draw)  # HF's N(0, 1) for the shared table
      elif module.endswith("attention/query"):
        # T5 folds the attention's 1/sqrt(Dh) into the query init.
        values.append(draw * (config.d_model * config.head_dim) ** -0.5)
      else:  # "w" [..., in, out]
        values.append(draw * leaf.shape[-2] ** -0.5)
    return jax.tree.unflatten(treedef, values)

  return init


def _check_remat(remat: str) -> None:
  validation.check_choice("remat", remat, model_lib.REMAT_MODES)


def _mask(tokens: Array, mask: Array | None) -> Array:
  chex.assert_rank(tokens, 2)
  if mask is None:
    return jnp.ones(tokens.shape, bool)
  chex.assert_equal_shape([tokens, mask])
  return mask.astype(bool)


@functools.lru_cache(maxsize=256)
def make_t5(config: T5Config) -> EncoderDecoderModel:
  """Builds the pure functions of the T5 model described by `config`.

  Equal configurations give the same object (see `model.make_model`).

  Args:
    config: the model configuration.

  Returns:
    An `EncoderDecoderModel`; see the module docstring for each function.
  """
  encoder = hk.without_apply_rng(hk.transform(
      lambda *a, **k: _encoder(config, *a, **k)))
  decoder = hk.without_apply_rng(hk.transform(
      lambda *a, **k: _decoder(config, *a, **k)))

  # The encoder's and the decoder's parameters ("t5/shared" is in both).
  tokens = jnp.zeros((1, 1), jnp.int32)
  mask = tokens == 0
  key = jax.random.key(0)
  shapes = dict(jax.eval_shape(
      lambda k: encoder.init(k, tokens, mask, "none"), key))
  shapes.update(jax.eval_shape(
      lambda k: decoder.init(k, tokens, mask, jnp.zeros(
          (1, 1, config.d_model)), mask, None), key))
  init = _init_values(config, shapes)

  def encode(params: Params, src_tokens: Array, src_mask: Array | None = None,
             *, remat: str = "none", unroll: bool = False) -> Array:
    """Encoder output [B, S, D] of source tokens [B, S] (mask [B, S])."""
    _check_remat(remat)
    model_lib.check_unroll(unroll, remat)
    return encoder.apply(params, src_tokens, _mask(src_tokens, src_mask),
                         remat, unroll)

  def decoder_hidden(params: Params, encoder_out: Array, src_mask: Array,
                     tokens: Array, mask: Array | None = None, *,
                     remat: str = "none", unroll: bool = False) -> Array:
    """Decoder hidden states [B, T, D] (scaled for tied models) of decoder
    tokens [B, T] attending to `encoder_out` [B, S, D] (src_mask [B, S])."""
    _check_remat(remat)
    model_lib.check_unroll(unroll, remat)
    chex.assert_rank(encoder_out, 3)
    h, _ = decoder.apply(params, tokens, _mask(tokens, mask), encoder_out,
                         src_mask.astype(bool), None, remat, unroll)
    return h

  def hidden(params: Params, src_tokens: Array, src_mask: Array | None,
             tokens: Array, mask: Array | None = None, *,
             remat: str = "none", unroll: bool = False) -> Array:
    """Decoder hidden states [B, T, D]: `encode` then `decoder_hidden`."""
    src_mask = _mask(src_tokens, src_mask)
    enc = encode(params, src_tokens, src_mask, remat=remat, unroll=unroll)
    return decoder_hidden(params, enc, src_mask, tokens, mask, remat=remat,
                          unroll=unroll)

  def unembedding(params: Params) -> Array:
    """The [D, V] matrix with logits = hidden @ unembedding."""
    if config.tie_embeddings:
      return params[SHARED]["embeddings"].T
    return params[UNEMBED]["w"]

  def _logits(h: Array, params: Params) -> Array:
    return layers.unembed(h, unembedding(params))

  def apply(params: Params, src_tokens: Array, src_mask: Array | None,
            tokens: Array, mask: Array | None = None, *,
            remat: str = "none", unroll: bool = False) -> Array:
    """Float32 logits [B, T, V] of decoder tokens [B, T] given the source."""
    return _logits(hidden(params, src_tokens, src_mask, tokens, mask,
                          remat=remat, unroll=unroll), params)

  def init_cache(batch_size: int, max_length: int, source_length: int,
                 dtype: Any = jnp.float32) -> T5Cache:
    """An empty cache: `max_length` decoder slots, `source_length` tokens."""
    for name, value in (("batch_size", batch_size),
                        ("max_length", max_length),
                        ("source_length", source_length)):
      validation.check_int(name, value, minimum=1)
    h, dh, n = config.n_heads, config.head_dim, config.n_decoder_layers
    self_shape = (n, batch_size, h, max_length, dh)
    cross_shape = (n, batch_size, h, source_length, dh)
    cache = T5Cache(
        keys=jnp.zeros(self_shape, dtype), values=jnp.zeros(self_shape, dtype),
        mask=jnp.zeros((batch_size, max_length), bool),
        index=jnp.zeros((), jnp.int32),
        cross_keys=jnp.zeros(cross_shape, dtype),
        cross_values=jnp.zeros(cross_shape, dtype),
        source_mask=jnp.zeros((batch_size, source_length), bool))
    # As in LanguageModel.init_cache: keeps XLA from constant-folding
    # attention over the empty cache inside a compiled sampler.
    return jax.lax.optimization_barrier(cache)

  def _step(params, tokens, mask, cache, encoder_out):
    h, outputs = decoder.apply(params, tokens, mask, encoder_out,
                               cache.source_mask, cache, "none")
    cache = cache._replace(
        keys=outputs[0], values=outputs[1],
        mask=jax.lax.dynamic_update_slice(cache.mask, mask, (0, cache.index)),
        index=cache.index + tokens.shape[1])
    if encoder_out is not None:
      cache = cache._replace(cross_keys=outputs[2], cross_values=outputs[3])
    return _logits(h, params), cache

  def prefill(params: Params, src_tokens: Array, src_mask: Array,
              tokens: Array, mask: Array | None,
              cache: T5Cache) -> tuple[Array, T5Cache]:
    """Encodes the source, caches its cross keys/values and the decoder
    prefix tokens [B, T0]; returns `(logits [B, T0, V] float32, cache)` in
    the form (stacked or per layer) of the given cache."""
    if isinstance(cache.keys, tuple):
      logits, cache = prefill(params, src_tokens, src_mask, tokens, mask,
                              t5_decoding.stack_cache(cache))
      return logits, t5_decoding.unstack_cache(cache)
    if isinstance(params, t5_decoding.T5DecodeParams):
      raise TypeError("prefill takes the model's parameters, not the "
                      "T5DecodeParams of prepare_decode.")
    src_mask = _mask(src_tokens, src_mask)
    chex.assert_equal_shape([src_mask, cache.source_mask])
    enc = encode(params, src_tokens, src_mask)
    return _step(params, tokens, _mask(tokens, mask),
                 cache._replace(source_mask=src_mask), enc)

  def decode(params: Params, tokens: Array,
             cache: T5Cache) -> tuple[Array, T5Cache]:
    """Caches one real decoder token per row, tokens [B]; logits [B, V].

    `params` are the model's or `prepare_decode`'s; `cache` is stacked or
    per layer (`unstack_cache`), and is returned in the same form.
    """
    chex.assert_rank(tokens, 1)
    if isinstance(params, t5_decoding.T5DecodeParams) or isinstance(
        cache.keys, tuple):
      if not isinstance(params, t5_decoding.T5DecodeParams):
        params = t5_decoding.prepare(config, params)
      return t5_decoding.decode(config, params, tokens.astype(jnp.int32),
                                cache)
    logits, cache = _step(params, tokens[:, None].astype(jnp.int32),
                          jnp.ones((tokens.shape[0], 1), bool), cache, None)
    return logits[:, 0], cache

  return EncoderDecoderModel(
      config=config, init=init, encode=encode, decoder_hidden=decoder_hidden,
      hidden=hidden, apply=apply, unembedding=unembedding,
      init_cache=init_cache, prefill=prefill, decode=decode,
      prepare_decode=lambda params: t5_decoding.prepare(config, params),
      unstack_cache=t5_decoding.unstack_cache,
      stack_cache=t5_decoding.stack_cache)
