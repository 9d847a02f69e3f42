"""A tiny language model with the `gkdrl.networks.LanguageModel` interface.

Its next-token logits at a position are an explicit function of the current
token, the bag of all valid tokens so far and the position:

    logits = W[token] + (counts @ U) + pos_table[position]

where `counts` [V] counts the valid tokens up to and including the current
one and `position = cumsum(mask) - 1`. The "cache" is just (counts, next
position), so prefill/decode must agree with `apply` on the concatenated
sequence exactly as a transformer's KV cache must, and left padding matters
(padding neither counts nor advances the position). Small enough that tests
compile in well under a second.
"""

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True, kw_only=True)
class ToyConfig:
  vocab_size: int = 12
  max_positions: int = 64
  scale: float = 1.5
  pad_token_id: int | None = None


class ToyCache(NamedTuple):
  counts: jax.Array  # [B, V] counts of the valid tokens fed so far
  next_position: jax.Array  # [B] int32


class ToyModel(NamedTuple):
  config: ToyConfig
  init: object
  apply: object
  init_cache: object
  prefill: object
  decode: object


def make_toy_model(config: ToyConfig = ToyConfig(), *,
                   trace_counter: list | None = None) -> ToyModel:
  """Builds the toy model; `trace_counter` (a list) records prefill traces."""
  v = config.vocab_size

  def init(key):
    k1, k2, k3 = jax.random.split(key, 3)
    return dict(
        w=config.scale * jax.random.normal(k1, (v, v)),
        u=0.3 * config.scale * jax.random.normal(k2, (v, v)),
        pos=config.scale * jax.random.normal(k3, (config.max_positions, v)))

  def _logits(params, tokens, counts, positions):
    return (params["w"][tokens] + counts @ params["u"] +
            params["pos"][positions]).astype(jnp.float32)

  def apply(params, tokens, mask=None):
    if mask is None:
      mask = jnp.ones(tokens.shape, bool)
    onehot = jax.nn.one_hot(tokens, v) * mask[..., None]  # [B, L, V]
    counts = jnp.cumsum(onehot, axis=1)  # [B, L, V]
    positions = jnp.maximum(jnp.cumsum(mask, axis=1) - 1, 0)  # [B, L]
    return _logits(params, tokens, counts, positions)

  def init_cache(batch_size, max_length, dtype=jnp.float32):
    del max_length
    return ToyCache(counts=jnp.zeros((batch_size, v), dtype),
                    next_position=jnp.zeros((batch_size,), jnp.int32))

  def prefill(params, tokens, mask, cache):
    if trace_counter is not None:
      trace_counter.append(tokens.shape)
    logits = apply(params, tokens, mask)
    counts = cache.counts + (jax.nn.one_hot(tokens, v) *
                             mask[..., None]).sum(1).astype(cache.counts.dtype)
    next_position = cache.next_position + mask.sum(1, dtype=jnp.int32)
    return logits, ToyCache(counts=counts, next_position=next_position)

  def decode(params, tokens, cache):
    counts = cache.counts + jax.nn.one_hot(tokens, v, dtype=cache.counts.dtype)
    logits = _logits(params, tokens, counts.astype(jnp.float32),
                     cache.next_position)
    return logits, ToyCache(counts=counts,
                            next_position=cache.next_position + 1)

  return ToyModel(config=config, init=init, apply=apply,
                  init_cache=init_cache, prefill=prefill, decode=decode)
