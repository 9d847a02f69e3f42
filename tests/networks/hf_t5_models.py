"""Tiny random Hugging Face T5 models shared by the tests.

`save_random_t5(name, directory, torch)` builds `T5ForConditionalGeneration`
for one of T5_NAMES with random weights (norms and relative biases
included), saves it with transformers' `save_pretrained` and returns it in
eval mode. "v1_0" is T5 v1.0 (ReLU, head tied to the shared embedding with
the d_model**-0.5 output scaling), "v1_1" is T5 v1.1 / Flan-T5 (gated GELU,
untied head, no scaling). Both have H * Dh != D, more decoder than encoder
layers, and few buckets with a short max distance, so that sequences of ~20
tokens reach the logarithmic and the clipped buckets.
"""

import pathlib

import transformers

VOCAB_SIZE = 97
PAD, EOS, START = 0, 1, 0


def hf_config(name: str) -> transformers.T5Config:
  """The transformers config of the tiny T5 `name` (see T5_NAMES)."""
  common = dict(vocab_size=VOCAB_SIZE, d_model=32, d_kv=6, d_ff=48,
                num_layers=2, num_decoder_layers=3, num_heads=4,
                relative_attention_num_buckets=8,
                relative_attention_max_distance=12, layer_norm_epsilon=1e-6,
                pad_token_id=PAD, eos_token_id=EOS,
                decoder_start_token_id=START)
  if name == "v1_0":
    return transformers.T5Config(feed_forward_proj="relu",
                                 tie_word_embeddings=True, **common)
  if name == "mt5":
    return transformers.MT5Config(feed_forward_proj="gated-gelu",
                                  tie_word_embeddings=False, **common)
  return transformers.T5Config(feed_forward_proj="gated-gelu",
                               tie_word_embeddings=False, **common)


T5_NAMES = ("v1_0", "v1_1")  # "mt5" (v1.1 as MT5ForConditionalGeneration)


def save_random_t5(name: str, directory: pathlib.Path, torch,
                   max_shard_size=None):
  """Builds a random HF T5 `name`, saves it to `directory`, returns it.

  Args:
    name: one of T5_NAMES, or "mt5".
    directory: where `save_pretrained` writes config.json and safetensors.
    torch: the torch module (from the `torch` fixture).
    max_shard_size: passed to `save_pretrained` (e.g. "20KB" for shards).

  Returns:
    The transformers model in eval mode, float32.
  """
  torch.manual_seed(0)
  config = hf_config(name)
  model = (transformers.MT5ForConditionalGeneration if name == "mt5" else
           transformers.T5ForConditionalGeneration)(config)
  with torch.no_grad():
    for param in model.parameters():
      param.add_(0.2 * torch.randn_like(param))
    if name != "v1_0":
      # Some transformers versions tie lm_head at construction even for
      # tie_word_embeddings=False; a separate parameter unties it.
      model.lm_head.weight = torch.nn.Parameter(
          torch.randn(VOCAB_SIZE, config.d_model) * config.d_model ** -0.5)
  model.eval()
  kwargs = {} if max_shard_size is None else dict(
      max_shard_size=max_shard_size)
  model.save_pretrained(directory, **kwargs)
  return model
