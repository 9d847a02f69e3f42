"""The sampler on real gkdrl.networks models (tiny GPT-2 and Llama).

Greedy decoding is compared token for token with Hugging Face
`generate(do_sample=False)` on the same weights; sampled tokens' `logp_a` is
compared with a full `apply` on the concatenated sequence.
"""

import dataclasses

import jax
import numpy as np
import pytest

from gkdrl import networks
from gkdrl import sampling
from gkdrl.sampling import sampler
from tests.networks import hf_models

T = 12
PAD = 0
# A left-padded batch: prompt lengths 7, 5, 3 and 1.
PROMPT_LENGTHS = np.array([7, 5, 3, 1])
P = int(PROMPT_LENGTHS.max())
PROMPT_MASK = np.arange(P)[None] >= P - PROMPT_LENGTHS[:, None]


def _prompt(seed, vocab_size):
  rng = np.random.default_rng(seed)
  tokens = rng.integers(3, vocab_size, PROMPT_MASK.shape).astype(np.int32)
  return np.where(PROMPT_MASK, tokens, PAD)


def _hf_generate(hf_model, prompt, eos, torch):
  with torch.no_grad():
    out = hf_model.generate(
        input_ids=torch.as_tensor(prompt, dtype=torch.long),
        attention_mask=torch.as_tensor(PROMPT_MASK, dtype=torch.long),
        do_sample=False, max_new_tokens=T, min_new_tokens=0,
        eos_token_id=eos, pad_token_id=PAD)
  return out[:, P:].numpy()


def _until_eos(tokens, eos):
  """Each row's tokens up to and including its first EOS, as lists."""
  rows = []
  for row in tokens:
    row = list(row)
    rows.append(row[:row.index(eos) + 1] if eos in row else row)
  return rows


@pytest.mark.torch
@pytest.mark.parametrize("name", ["gpt2", "llama_gqa_tied"])
def test_greedy_matches_hf_generate(name, tmp_path, torch):
  hf_model = hf_models.save_random_hf_model(name, tmp_path, torch)
  model, params = networks.from_pretrained(tmp_path)
  prompt = _prompt(0, model.config.vocab_size)
  # An EOS id that greedy decoding really emits mid-sequence: the token HF
  # generates at step 4 of the longest prompt when no EOS stops it.
  free_run = _hf_generate(hf_model, prompt, None, torch)
  eos = int(free_run[0, 4])
  expected = _until_eos(_hf_generate(hf_model, prompt, eos, torch), eos)
  samples = sampling.sample(model, params, jax.random.key(0), prompt,
                            PROMPT_MASK, max_new_tokens=T, temperature=0.0,
                            eos_token_id=eos, pad_token_id=PAD)
  tokens = np.asarray(samples.tokens)
  mask = np.asarray(samples.mask)
  got = [list(row[m]) for row, m in zip(tokens, mask)]
  assert got == expected
  np.testing.assert_array_equal(samples.lengths, [len(r) for r in expected])
  assert min(len(r) for r in expected) <= 5  # the EOS did stop a row


def test_logp_a_matches_apply_and_compiles_once():
  config = hf_models.jax_config("llama_gqa_tied")
  base = networks.make_model(config)
  traces = []

  def prefill(*args):
    traces.append(1)
    return base.prefill(*args)

  model = base._replace(prefill=prefill)
  apply = jax.jit(base.apply)
  eos = [2, 7]
  for seed in range(2):  # new params, prompts and key: no new compile
    params = model.init(jax.random.key(seed))
    prompt = _prompt(seed, config.vocab_size)
    samples = sampling.sample(
        model, params, jax.random.key(seed), prompt, PROMPT_MASK,
        max_new_tokens=T, temperature=0.8, top_p=0.95, eos_token_id=eos,
        pad_token_id=PAD)
    tokens = np.concatenate([prompt, samples.tokens], 1)
    mask = np.concatenate([PROMPT_MASK, samples.mask], 1)
    logits = np.asarray(apply(params, tokens, mask), np.float64)
    logits = logits[:, P - 1:-1]  # position P + t - 1 predicts token t
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    expected = np.take_along_axis(log_probs, np.asarray(samples.tokens)[
        ..., None], -1)[..., 0]
    np.testing.assert_allclose(
        samples.logp_a, np.where(samples.mask, expected, 0.0), atol=2e-5)
    assert np.asarray(samples.mask).sum() > 8
  assert len(traces) == 1


def test_models_of_one_configuration_share_their_compiled_sampler(tmp_path):
  # A model loaded again from its directory (a new run, a new test) is the
  # object `make_model` gave for that configuration, so the sampler compiled
  # for the first serves the second; another configuration compiles anew.
  config = hf_models.jax_config("llama_gqa_tied")
  model = networks.make_model(config)
  params = model.init(jax.random.key(0))
  networks.save_pretrained(model, params, tmp_path)
  loaded, loaded_params = networks.from_pretrained(tmp_path)
  assert loaded is model
  compiled = sampler._sample._cache_size  # programs compiled so far
  prompt = _prompt(0, config.vocab_size)
  kwargs = dict(max_new_tokens=3, temperature=0.0, eos_token_id=2,
                pad_token_id=PAD)
  before = compiled()
  first = sampling.sample(model, params, jax.random.key(0), prompt,
                          PROMPT_MASK, **kwargs)
  again = sampling.sample(loaded, loaded_params, jax.random.key(0),
                          prompt, PROMPT_MASK, **kwargs)
  assert compiled() == before + 1
  np.testing.assert_array_equal(first.tokens, again.tokens)
  wider = networks.make_model(dataclasses.replace(config, d_ff=config.d_ff * 2))
  assert wider is not model
  sampling.sample(wider, wider.init(jax.random.key(0)), jax.random.key(0),
                  prompt, PROMPT_MASK, **kwargs)
  assert compiled() == before + 2
