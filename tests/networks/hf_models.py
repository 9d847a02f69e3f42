"""Tiny random Hugging Face causal LMs shared by the tests.

`hf_config(name)` gives a transformers config (no torch needed),
`jax_config(name)` the matching `ModelConfig`, and
`save_random_hf_model(name, directory, torch)` builds the PyTorch model with
random weights (norms and biases included, so that every tensor matters),
saves it with `save_pretrained` and returns it in eval mode.

The sampler tests import this module too.
"""

import pathlib

import transformers

from gkdrl import networks

VOCAB_SIZE = 101

_CONFIGS = {
    "gpt2": lambda: transformers.GPT2Config(
        vocab_size=VOCAB_SIZE, n_embd=32, n_layer=2, n_head=4, n_positions=64,
        bos_token_id=1, eos_token_id=2),
    "llama_gqa_tied": lambda: transformers.LlamaConfig(
        vocab_size=VOCAB_SIZE, hidden_size=32, intermediate_size=48,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=64, rope_theta=500.0, rms_norm_eps=1e-5,
        tie_word_embeddings=True, bos_token_id=1, eos_token_id=2,
        pad_token_id=0),
    "llama_gqa_untied": lambda: transformers.LlamaConfig(
        vocab_size=VOCAB_SIZE, hidden_size=32, intermediate_size=48,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        head_dim=12, max_position_embeddings=64, rms_norm_eps=1e-5,
        tie_word_embeddings=False, bos_token_id=1, eos_token_id=2),
    "qwen2": lambda: transformers.Qwen2Config(
        vocab_size=VOCAB_SIZE, hidden_size=32, intermediate_size=48,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1,
        max_position_embeddings=64, rope_theta=1e6, rms_norm_eps=1e-6,
        tie_word_embeddings=False, bos_token_id=1, eos_token_id=2),
}
CONFIG_NAMES = tuple(_CONFIGS)
_MODEL_CLASSES = {
    "gpt2": "GPT2LMHeadModel",
    "llama_gqa_tied": "LlamaForCausalLM",
    "llama_gqa_untied": "LlamaForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
}


def hf_config(name: str) -> transformers.PretrainedConfig:
  """The transformers config of the tiny model `name` (see CONFIG_NAMES)."""
  return _CONFIGS[name]()


def jax_config(name: str) -> networks.ModelConfig:
  """The `ModelConfig` equivalent to `hf_config(name)`."""
  return networks.ModelConfig.from_hf_config(hf_config(name).to_dict())


def save_random_hf_model(name: str, directory: pathlib.Path, torch):
  """Builds a random PyTorch model, saves it to `directory`, returns it.

  Args:
    name: one of CONFIG_NAMES.
    directory: where `save_pretrained` writes config.json and safetensors.
    torch: the torch module (from the `torch` fixture).

  Returns:
    The transformers model in eval mode, float32.
  """
  torch.manual_seed(0)
  model = getattr(transformers, _MODEL_CLASSES[name])(hf_config(name))
  with torch.no_grad():
    for param in model.parameters():
      # Noise on top of HF's init so norms and biases are not 1s and 0s, at
      # a scale that keeps logits O(1).
      param.add_(0.2 * torch.randn_like(param))
  model.eval()
  model.save_pretrained(directory)
  return model


def hf_logits(model, tokens, mask, torch):
  """Logits of a transformers model on a left-padded batch, float32 NumPy.

  Positions follow our convention: cumsum(mask) - 1 clipped at 0.
  """
  ids = torch.as_tensor(tokens, dtype=torch.long)
  attention_mask = torch.as_tensor(mask, dtype=torch.long)
  position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
  with torch.no_grad():
    out = model(input_ids=ids, attention_mask=attention_mask,
                position_ids=position_ids)
  return out.logits.float().numpy()
