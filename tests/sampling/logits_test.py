"""Tests for gkdrl.sampling.logits: the filters against NumPy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gkdrl import sampling


def allowed_set(logits, *, temperature=1.0, top_k=0, top_p=1.0):
  """NumPy float64 reference of the tokens top-k / top-p may emit.

  Args:
    logits: [..., V] raw logits.
    temperature: > 0.
    top_k: 0 or the number of tokens kept.
    top_p: nucleus mass in (0, 1].

  Returns:
    [..., V] bool, True for allowed tokens, and [..., V] float64, the
    renormalised distribution over them.
  """
  logits = np.asarray(logits, np.float64) / temperature
  order = np.argsort(-logits, axis=-1, kind="stable")
  ranked = np.take_along_axis(logits, order, axis=-1)  # descending
  vocab_size = logits.shape[-1]
  keep_ranked = np.ones(ranked.shape, bool)
  if top_k:
    keep_ranked[..., min(top_k, vocab_size):] = False
  probs = np.exp(ranked - ranked.max(-1, keepdims=True)) * keep_ranked
  probs /= probs.sum(-1, keepdims=True)
  if top_p < 1:
    # Smallest prefix of the ranking whose mass reaches top_p.
    cum = np.cumsum(probs, axis=-1)
    keep_ranked &= (cum - probs) < top_p
  allowed = np.zeros(logits.shape, bool)
  np.put_along_axis(allowed, order, keep_ranked, axis=-1)
  dist = np.where(allowed, np.exp(logits - logits.max(-1, keepdims=True)), 0)
  return allowed, dist / dist.sum(-1, keepdims=True)


@pytest.mark.parametrize("top_k, top_p", [(0, 1.0), (1, 1.0), (3, 1.0),
                                          (50, 1.0), (0, 0.5), (0, 0.9),
                                          (4, 0.7), (0, 1e-6)])
def test_filter_logits_matches_numpy(top_k, top_p):
  logits = 2.0 * jax.random.normal(jax.random.key(0), (64, 20))
  filtered = sampling.filter_logits(logits, top_k=top_k, top_p=top_p)
  allowed, _ = allowed_set(logits, top_k=top_k, top_p=top_p)
  np.testing.assert_array_equal(np.isfinite(filtered), allowed)
  np.testing.assert_array_equal(np.where(allowed, filtered, 0),
                                np.where(allowed, logits, 0))


# At top_p = 0.999 one token in 40,000 sits on the threshold: the bound
# was set against the optimised program's rounding.
@pytest.mark.xla_optimized
@pytest.mark.parametrize("top_p", [0.3, 0.9, 0.999])
def test_top_p_over_a_large_vocabulary(top_p):
  """The bisection path (top_p without top_k) on a realistic vocabulary."""
  logits = 4.0 * jax.random.normal(jax.random.key(3), (8, 5000))
  filtered = sampling.filter_logits(logits, top_p=top_p)
  allowed, _ = allowed_set(logits, top_p=top_p)
  np.testing.assert_array_equal(np.isfinite(filtered), allowed)
  assert allowed.sum() > 8 and allowed.sum(-1).max() < 5000  # not trivial


def test_filter_logits_keeps_at_least_one_token():
  logits = jnp.array([[10.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
  filtered = sampling.filter_logits(logits, top_p=0.01)
  assert np.isfinite(filtered[0]).sum() == 1
  # Equal logits tie with the threshold, so all are kept.
  assert np.isfinite(filtered[1]).all()


def test_greedy_and_logp_a():
  logits = 3.0 * jax.random.normal(jax.random.key(1), (16, 9))
  config = sampling.SamplingConfig(temperature=0.0)
  action, logp_a = sampling.sample_token(jax.random.key(2), logits, config)
  np.testing.assert_array_equal(action, np.argmax(logits, -1))
  log_probs = jax.nn.log_softmax(np.asarray(logits, np.float64))
  np.testing.assert_allclose(
      logp_a, np.take_along_axis(np.asarray(log_probs), action[:, None],
                                 -1)[:, 0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kwargs, match", [
    (dict(temperature=-0.1), "temperature.*-0.1"),
    (dict(temperature=float("nan")), "temperature.*nan"),
    (dict(temperature=float("inf")), "temperature.*inf"),
    (dict(temperature=1e-30), r"temperature=1e-30.*\[0\.001, 1000\]"),
    (dict(temperature=1e4), r"temperature=10000.*or are 0 \(greedy\)"),
    (dict(top_k=-1), "top_k.*-1"),
    (dict(top_k=2.5), "top_k.*2.5"),
    (dict(top_p=0.0), "top_p.*0.0"),
    (dict(top_p=1.5), "top_p.*1.5"),
    (dict(top_p=-0.2), "top_p.*-0.2"),
])
def test_config_validation(kwargs, match):
  with pytest.raises(ValueError, match=match):
    sampling.SamplingConfig(**kwargs)


def test_config_is_hashable_and_normalised():
  assert (sampling.SamplingConfig(temperature=1, top_p=1) ==
          sampling.SamplingConfig())
  assert hash(sampling.SamplingConfig(temperature=1)) == hash(
      sampling.SamplingConfig())
  assert sampling.SamplingConfig(temperature=0).greedy


def _transformers_kept(torch, logits, top_k, top_p):
  """transformers' TopKLogitsWarper then TopPLogitsWarper: kept mask."""
  from transformers import generation  # pylint: disable=g-import-not-at-top
  scores = torch.tensor(np.asarray(logits, np.float32))
  if top_k:
    scores = generation.TopKLogitsWarper(top_k=top_k)(None, scores)
  if top_p < 1:
    scores = generation.TopPLogitsWarper(top_p=top_p)(None, scores)
  return np.isfinite(scores.numpy())


def _tie_closure(logits, kept):
  """Every token whose logit is >= the smallest kept logit, per row."""
  logits = np.asarray(logits, np.float32)
  smallest = np.where(kept, logits, np.inf).min(-1, keepdims=True)
  return logits >= smallest


def test_top_k_and_top_p_with_a_tie_at_the_kth_logit(torch):
  # top_k=2 keeps all four tokens (the k-th logit, 1, is tied three ways);
  # over those four, the 2 has mass 0.475 < 0.6, so the nucleus must reach
  # into the tied 1s. The old normaliser (over two tokens) kept the 2 alone.
  logits = np.array([[2.0, 1.0, 1.0, 1.0]], np.float32)
  filtered = sampling.filter_logits(jnp.asarray(logits), top_k=2, top_p=0.6)
  theirs = _transformers_kept(torch, logits, 2, 0.6)
  assert theirs.sum() == 2  # the 2 and one of the tied 1s
  np.testing.assert_array_equal(np.isfinite(filtered),
                                _tie_closure(logits, theirs))
  np.testing.assert_array_equal(np.isfinite(filtered), [[True] * 4])


def test_top_k_ties_are_all_kept_like_transformers(torch):
  logits = np.array([[3.0, 1.0, 2.0, 2.0, 2.0, 0.0]], np.float32)
  filtered = sampling.filter_logits(jnp.asarray(logits), top_k=2)
  np.testing.assert_array_equal(np.isfinite(filtered),
                                _transformers_kept(torch, logits, 2, 1.0))


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("top_k, top_p", [(2, 0.5), (3, 0.8), (5, 0.3),
                                          (4, 0.95)])
def test_random_ties_match_the_tie_closure_of_transformers(torch, seed,
                                                           top_k, top_p):
  # Few distinct values, so the k-th logit and the nucleus cut are often
  # tied; where transformers keeps part of a tied group we keep all of it.
  rng = np.random.default_rng(seed)
  logits = rng.integers(0, 4, size=(32, 9)).astype(np.float32) * 0.7
  filtered = sampling.filter_logits(jnp.asarray(logits), top_k=top_k,
                                    top_p=top_p)
  theirs = _transformers_kept(torch, logits, top_k, top_p)
  ours = np.isfinite(np.asarray(filtered))
  np.testing.assert_array_equal(ours, _tie_closure(logits, theirs))
  assert np.all(ours >= theirs)


@pytest.mark.parametrize("top_k, top_p", [(3, 0.7), (10, 0.9), (1, 0.5)])
def test_without_ties_the_set_equals_transformers(torch, top_k, top_p):
  logits = np.asarray(2.0 * jax.random.normal(jax.random.key(5), (64, 20)))
  filtered = sampling.filter_logits(jnp.asarray(logits), top_k=top_k,
                                    top_p=top_p)
  np.testing.assert_array_equal(np.isfinite(np.asarray(filtered)),
                                _transformers_kept(torch, logits, top_k,
                                                   top_p))


def test_draws_follow_the_distribution_across_blocks():
  """`sample_token` inverts the CDF block by block (blocks of 32 tokens for
  V = 1000, the last one padded): 24 finite logits spread over the blocks,
  the first and last token among them, are drawn at their float64
  softmax frequencies, and excluded tokens never are. Bound as in
  sampler_test._assert_frequencies: with 24 possible tokens and N = 32768
  draws, E[TV] <= 0.5 sqrt(24 / N) = 0.0135, and TV exceeds that by 0.015
  with probability below 1e-6."""
  vocab_size, n = 1000, 32768
  rng = np.random.default_rng(0)
  kept = np.concatenate([[0, 999], rng.choice(np.arange(1, 999), 22,
                                                replace=False)])
  logits = np.full((vocab_size,), -np.inf, np.float32)
  logits[kept] = 1.5 * rng.standard_normal(kept.size)
  config = sampling.SamplingConfig()
  tokens, _ = jax.vmap(lambda key: sampling.sample_token(
      key, jnp.asarray(logits)[None], config))(
          jax.random.split(jax.random.key(3), n))
  tokens = np.asarray(tokens)[:, 0]
  assert np.isin(tokens, kept).all()
  _, probs = allowed_set(logits[np.isfinite(logits)])
  counts = np.bincount(tokens, minlength=vocab_size)[np.isfinite(logits)]
  tv = 0.5 * np.abs(counts / n - probs).sum()
  assert tv < 0.03, tv


@pytest.mark.parametrize("vocab_size", [1, 2, 7, 1000, 8192])
def test_a_single_allowed_token_is_always_drawn(vocab_size):
  """Whatever block it sits in, the first, a middle or the last one (u can
  round up to the total, sums within a block can round down)."""
  rows = sorted({0, vocab_size // 2, vocab_size - 1})
  logits = np.full((len(rows), vocab_size), -np.inf, np.float32)
  logits[np.arange(len(rows)), rows] = 5.0
  for seed in range(3):
    action, logp_a = sampling.sample_token(
        jax.random.key(seed), jnp.asarray(logits), sampling.SamplingConfig())
    np.testing.assert_array_equal(action, rows)
    np.testing.assert_allclose(logp_a, 0.0, atol=1e-6)
