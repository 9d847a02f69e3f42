"""`sampling.sample` with T5 encoder-decoders: greedy decoding equals
transformers' `generate`, sampled tokens carry their teacher-forced
log-probabilities, and EOS ends a row as for decoder-only models."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gkdrl import networks
from gkdrl import sampling
from tests import conftest
from tests.networks import hf_t5_models

V = hf_t5_models.VOCAB_SIZE
EOS, PAD, START = hf_t5_models.EOS, hf_t5_models.PAD, hf_t5_models.START
T = 10
SRC_MASK = np.array([[1] * 12, [0] * 5 + [1] * 7, [1] * 3 + [0] * 9,
                     [1] * 12], bool)
SRC = np.where(SRC_MASK, np.random.default_rng(3).integers(2, V, (4, 12)),
               PAD)


@pytest.fixture(scope="module", params=hf_t5_models.T5_NAMES)
def hf_and_ours(request, tmp_path_factory):
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    conftest.skip_or_fail("torch is not installed: pip install torch==2.13.0")
  directory = tmp_path_factory.mktemp(request.param)
  hf_model = hf_t5_models.save_random_t5(request.param, directory, torch)
  model, params = networks.from_pretrained(directory)
  return torch, hf_model, model, params


@pytest.mark.torch
def test_greedy_sample_equals_generate(hf_and_ours):
  torch, hf_model, model, params = hf_and_ours
  samples = sampling.sample(model, params, jax.random.key(0), SRC, SRC_MASK,
                            max_new_tokens=T, temperature=0.0,
                            eos_token_id=EOS)
  with torch.no_grad():
    expected = hf_model.generate(
        input_ids=torch.as_tensor(SRC, dtype=torch.long),
        attention_mask=torch.as_tensor(SRC_MASK, dtype=torch.long),
        do_sample=False, max_new_tokens=T, use_cache=False).numpy()[:, 1:]
  expected = np.pad(expected, ((0, 0), (0, T - expected.shape[1])),
                    constant_values=PAD)
  np.testing.assert_array_equal(np.asarray(samples.tokens), expected)
  assert len(np.unique(expected)) > 3  # not a constant sequence


def _teacher_forced_logp(model, params, tokens):
  """[B, T] float64 log pi(token_t | start, tokens_<t) from `apply`."""
  dec = np.concatenate([np.full((len(tokens), 1), START), tokens[:, :-1]], 1)
  logits = np.asarray(model.apply(params, SRC, SRC_MASK, dec), np.float64)
  log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  return np.take_along_axis(log_probs, tokens[..., None], -1)[..., 0]


@pytest.mark.torch
def test_sampled_tokens_carry_their_log_probabilities(hf_and_ours):
  _, _, model, params = hf_and_ours
  key = jax.random.key(1)
  kwargs = dict(max_new_tokens=T, temperature=1.0, top_k=20)
  first = sampling.sample(model, params, key, SRC, SRC_MASK,
                          eos_token_id=EOS, **kwargs)
  # Tokens drawn at step 3 as extra EOS ids: with the same key the draws
  # repeat, so those rows now end by step 3 and are otherwise unchanged.
  eos = (EOS,) + tuple(int(t) for t in np.asarray(first.tokens)[:, 3])
  samples = sampling.sample(model, params, key, SRC, SRC_MASK,
                            eos_token_id=eos, **kwargs)
  tokens, mask = np.asarray(samples.tokens), np.asarray(samples.mask)
  expected = _teacher_forced_logp(model, params, tokens)
  np.testing.assert_allclose(np.asarray(samples.logp_a),
                             np.where(mask, expected, 0.0), atol=1e-4)
  lengths = np.asarray(samples.lengths)
  assert lengths.tolist() == mask.sum(1).tolist()
  assert (lengths <= 4).all()
  for row in range(len(tokens)):
    end = lengths[row]
    assert tokens[row, end - 1] in eos
    np.testing.assert_array_equal(tokens[row, :end],
                                  np.asarray(first.tokens)[row, :end])
    assert (tokens[row, end:] == PAD).all()


def test_encoder_decoder_actor_prefills_the_start_token():
  config = networks.T5Config(vocab_size=V, d_model=8, n_layers=1, n_heads=2,
                             head_dim=4, d_ff=8, decoder_start_token_id=3)
  model = networks.make_t5(config)
  params = model.init(jax.random.key(0))
  actor = sampling.make_actor(model, max_new_tokens=4)
  state = actor.init(params, jnp.asarray(SRC), jnp.asarray(SRC_MASK))
  expected = model.apply(params, SRC, SRC_MASK, np.full((4, 1), 3))[:, 0]
  np.testing.assert_allclose(state.logits, expected, atol=1e-5)
  # The per-layer cache `observe` updates in place: [B, H, S, Dh] each.
  assert len(state.cache.keys) == 1 and state.cache.keys[0].shape[2] == 5
  assert int(state.cache.index) == 1


def test_encoder_decoder_sample_compiles_once():
  config = networks.T5Config(vocab_size=V, d_model=8, n_layers=1, n_heads=2,
                             head_dim=4, d_ff=8, gated_mlp=True,
                             activation="gelu_new", tie_embeddings=False)
  base = networks.make_t5(config)
  # One object per configuration, as for decoder-only models.
  assert networks.make_t5(dataclasses.replace(config)) is base
  traces = []

  def prefill(*args):
    traces.append(1)
    return base.prefill(*args)

  model = base._replace(prefill=prefill)
  for seed in range(2):  # new params, prompts and key: no new compile
    params = model.init(jax.random.key(seed))
    src = np.random.default_rng(seed).integers(2, V, SRC.shape) * SRC_MASK
    samples = sampling.sample(model, params, jax.random.key(seed), src,
                              SRC_MASK, max_new_tokens=T, temperature=0.8,
                              top_p=0.95, eos_token_id=EOS)
    assert np.asarray(samples.mask).sum() > 8
  assert len(traces) == 1
