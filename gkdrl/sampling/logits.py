"""Turning next-token logits into a sampled token: temperature, top-k, top-p.

The order is the one Hugging Face `generate` uses: divide by the temperature,
keep the top-k logits, then keep the smallest set of the remaining tokens
whose (renormalised) probability reaches top-p. Temperature 0 is greedy
decoding (argmax of the raw logits). The log-probability reported with each
token is always that of the untempered, unfiltered policy (temperature 1):
it is the behaviour log-probability that the learners need, whatever
distribution the token was drawn from.
"""

import dataclasses
import math

import chex
import jax
import jax.numpy as jnp

from gkdrl import types
from gkdrl import validation

Array = types.Array


@dataclasses.dataclass(frozen=True, kw_only=True)
class SamplingConfig:
  """How to draw a token from next-token logits.

  Attributes:
    temperature: divides the logits before sampling; 0 means greedy
      (argmax), else in [1e-3, 1e3].
    top_k: keep only the k most likely tokens; 0 disables, must be >= 0.
    top_p: nucleus sampling, keep the smallest set of most likely tokens
      whose probability reaches top_p; must be in (0, 1], 1 disables.
  """

  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0

  def __post_init__(self):
    if (isinstance(self.temperature, bool)
        or not isinstance(self.temperature, (int, float))
        or not math.isfinite(self.temperature) or self.temperature < 0):
      raise ValueError(f"temperature must be a finite number >= 0 (0 is "
                       f"greedy), got {self.temperature!r}")
    validation.check_temperature("temperature", self.temperature, greedy=True)
    if (isinstance(self.top_k, bool) or not isinstance(self.top_k, int)
        or self.top_k < 0):
      raise ValueError(
          f"top_k must be an int >= 0 (0 disables), got {self.top_k!r}")
    if (isinstance(self.top_p, bool)
        or not isinstance(self.top_p, (int, float))
        or not 0 < self.top_p <= 1):
      raise ValueError(
          f"top_p must be in (0, 1] (1 disables), got {self.top_p!r}")
    # Floats so that 1 and 1.0 hash alike as static jit arguments.
    object.__setattr__(self, "temperature", float(self.temperature))
    object.__setattr__(self, "top_p", float(self.top_p))

  @property
  def greedy(self) -> bool:
    return self.temperature == 0


def filter_logits(logits: Array, *, top_k: int = 0,
                  top_p: float = 1.0) -> Array:
  """Sets the logits outside the top-k / top-p set to -inf.

  Top-k keeps every token whose logit is >= the k-th largest, ties
  included (as transformers' `TopKLogitsWarper` does), so it can keep more
  than k tokens. Top-p then renormalises over that whole tie-inclusive set
  and keeps the smallest run of most likely tokens whose mass reaches
  top_p, plus every token tied with the least likely one it keeps.

  On ties this set is the tie closure of transformers' `TopPLogitsWarper`
  set: where transformers cuts through a group of equal logits, it keeps an
  arbitrary part of the group (whichever its sort puts last), and we keep
  the whole group; where no tie straddles the cut the two sets are equal.
  Either way the kept set depends only on the logits' values, never on the
  order of equal ones.

  Args:
    logits: [..., V] float logits (already divided by the temperature).
    top_k: number of most likely tokens kept (ties included); 0 keeps all.
    top_p: probability mass kept, in (0, 1]; 1 keeps all.

  Returns:
    [..., V] logits with the excluded tokens at -inf.
  """
  vocab_size = logits.shape[-1]
  k = min(top_k, vocab_size) if top_k > 0 else vocab_size
  if k == vocab_size:
    if top_p >= 1.0:
      return logits
    return _top_p_by_bisection(logits, top_p)
  values = jax.lax.top_k(logits, k)[0]  # [..., k] descending
  # min, not values[..., -1:]: XLA CPU rewrites a top-k whose last value
  # alone is read into a full sort of the vocabulary (60x slower).
  kth = jnp.min(values, axis=-1, keepdims=True)  # [..., 1]
  if top_p >= 1.0:
    return jnp.where(logits >= kth, logits, -jnp.inf)
  # Normalise over the tie-inclusive top-k set: the tokens tied with the
  # k-th value beyond the k that top_k returns carry mass too.
  logits32 = logits.astype(jnp.float32)
  log_normaliser = jax.nn.logsumexp(
      jnp.where(logits >= kth, logits32, -jnp.inf), axis=-1,
      keepdims=True)  # [..., 1]
  probs = jnp.exp(values.astype(jnp.float32) - log_normaliser)  # [..., k]
  # The mass of strictly more likely tokens: a token is kept while that is
  # below top_p, which gives the smallest set reaching top_p (and never an
  # empty one, since the most likely token has nothing before it). If the
  # k-th value is kept, so is every token tied with it.
  mass_before = jnp.cumsum(probs, axis=-1) - probs
  n_kept = jnp.sum(mass_before < top_p, axis=-1, keepdims=True)  # [..., 1]
  threshold = jnp.take_along_axis(values, n_kept - 1, axis=-1)
  return jnp.where(logits >= threshold, logits, -jnp.inf)


def _top_p_by_bisection(logits: Array, top_p: float) -> Array:
  """Top-p over the whole vocabulary without sorting it.

  The kept set is {p >= tau} for the largest probability tau whose set still
  holds mass >= top_p, i.e. the smallest set of most likely tokens reaching
  top_p. Non-negative float32 values order like their int32 bit patterns, so
  31 halvings of the bit range find tau exactly; each costs one masked sum
  over [..., V], several times cheaper on CPU than sorting 50k logits.
  """
  probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)  # [..., V]

  def mass(tau):  # [..., 1] -> [..., 1]
    return jnp.sum(jnp.where(probs >= tau, probs, 0.0), axis=-1,
                   keepdims=True)

  def halve(_, bounds):
    lo, hi = bounds  # mass(lo) >= top_p > mass(hi), as int32 bit patterns
    mid = lo + (hi - lo) // 2
    enough = mass(jax.lax.bitcast_convert_type(mid, jnp.float32)) >= top_p
    return jnp.where(enough, mid, lo), jnp.where(enough, hi, mid)

  peak = jnp.max(probs, axis=-1, keepdims=True)
  lo = jnp.zeros(peak.shape, jnp.int32)  # tau = 0 keeps everything
  hi = jax.lax.bitcast_convert_type(peak, jnp.int32) + 1  # keeps nothing
  lo, _ = jax.lax.fori_loop(0, 31, halve, (lo, hi))
  tau = jax.lax.bitcast_convert_type(lo, jnp.float32)  # [..., 1]
  return jnp.where(probs >= tau, logits, -jnp.inf)


def _inverse_cdf(key: types.PRNGKey,
                 logits: Array) -> tuple[Array, Array]:
  """Draws from softmax(logits) by inverting its CDF with one uniform per row.

  Equivalent in distribution to `jax.random.categorical`, which draws a
  Gumbel variable per logit: with a vocabulary of 50k tokens generating those
  random bits costs ten times more than this whole function on CPU.

  The CDF is inverted in two levels: the vocabulary is cut into blocks of
  the power of two at or above sqrt(V) tokens, the uniform picks a block from
  the prefix sums of the blocks' weights, then a token from the prefix sums
  within that block. Only the [B, sqrt(V)]-sized sums are scanned, never
  the whole [B, V] row: per token of a [8, 8192] decode loop on 2 CPU
  cores, 70 to 112 us against 360 to 470 us for a prefix sum over the
  vocabulary (benchmarks/README.md).

  Args:
    key: PRNG key.
    logits: [B, V] float32 logits, -inf for excluded tokens (at least one
      finite per row).

  Returns:
    tokens [B] int32, and the log normaliser logsumexp(logits) [B].
  """
  rows, vocab_size = logits.shape
  # A power of two >= sqrt(V): no padding for the usual vocabulary sizes.
  block = 1 << math.isqrt(vocab_size - 1).bit_length()
  n_blocks = -(-vocab_size // block)
  peak = jnp.max(logits, axis=-1, keepdims=True)  # [B, 1]
  weights = jnp.exp(logits - peak)  # [B, V], 0 for excluded tokens
  if n_blocks * block > vocab_size:
    # Zero weights pad the last block; a zero-weight token is never drawn.
    weights = jnp.pad(weights, ((0, 0), (0, n_blocks * block - vocab_size)))
  blocks = weights.reshape(rows, n_blocks, block)
  block_sums = jnp.sum(blocks, axis=-1)  # [B, N]
  block_cdf = jnp.cumsum(block_sums, axis=-1)  # [B, N]
  total = block_cdf[:, -1:]  # [B, 1]
  u = jax.random.uniform(key, total.shape, jnp.float32) * total
  # The first block, then the first token in it, whose CDF exceeds u: a
  # zero-weight block or token never is, as its CDF equals its
  # predecessor's. u can round up to `total`, and the sums within a block
  # can round below u's offset into it; the last block, and the last token
  # in the block, with weight catch both.
  index = _first_above(block_cdf, u, block_sums)  # [B]
  # u's offset into the block from the CDF before it, kept >= 0 so that a
  # zero-weight first token of the block is passed over too.
  block_starts = jnp.pad(block_cdf[:, :-1], ((0, 0), (1, 0)))  # [B, N]
  before = jnp.take_along_axis(block_starts, index[:, None], axis=-1)
  inner = jnp.take_along_axis(blocks, index[:, None, None],
                              axis=1)[:, 0]  # [B, block]
  offset = _first_above(jnp.cumsum(inner, axis=-1),
                        jnp.maximum(u - before, 0.0), inner)
  tokens = (index * block + offset).astype(jnp.int32)
  return tokens, (peak + jnp.log(total))[:, 0]


def _first_above(cdf: Array, u: Array, weights: Array) -> Array:
  """Per row, the first index whose `cdf` [B, N] exceeds `u` [B, 1], at
  most the last index whose `weights` [B, N] are positive."""
  n = cdf.shape[-1]
  last = n - 1 - jnp.argmax(weights[:, ::-1] > 0, axis=-1)
  return jnp.minimum(jnp.sum(cdf <= u, axis=-1), last)


def sample_token(key: types.PRNGKey, logits: Array,
                 config: SamplingConfig) -> tuple[Array, Array]:
  """Draws one token per row and reports its untempered log-probability.

  Args:
    key: PRNG key.
    logits: [B, V] next-token logits.
    config: temperature, top-k and top-p.

  Returns:
    action [B] int32, the drawn tokens, and logp_a [B] float32, their
    log-probability under softmax(logits) (temperature 1, no filtering).
  """
  chex.assert_rank(logits, 2)
  logits = logits.astype(jnp.float32)  # [B, V]
  untempered = config.temperature == 1 and config.top_k == 0 and (
      config.top_p == 1)
  if config.greedy:
    action = jnp.argmax(logits, axis=-1).astype(jnp.int32)
  else:
    scaled = logits / config.temperature  # [B, V]
    scaled = filter_logits(scaled, top_k=config.top_k, top_p=config.top_p)
    action, log_normaliser = _inverse_cdf(key, scaled)
  if config.greedy or not untempered:
    log_normaliser = jax.nn.logsumexp(logits, axis=-1)  # [B]
  logit_a = jnp.take_along_axis(logits, action[:, None], axis=-1)[:, 0]
  return action, logit_a - log_normaliser
