"""Writes HF-named tensors as a GGUF file the way llama.cpp's converter does.

A test-only stand-in for llama.cpp's convert_hf_to_gguf.py (not on PyPI):
llama.cpp tensor names, Llama q/k rows permuted for llama.cpp's rope, GPT-2
Conv1D weights transposed to [out, in], the config as metadata, and a small
byte-level vocabulary so that readers find `vocab_size`.
"""

import pathlib
import re

import gguf
import numpy as np

from gkdrl.networks.config import ModelConfig

_LLAMA = {
    "model.embed_tokens": "token_embd", "model.norm": "output_norm",
    "lm_head": "output", "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
    "post_attention_layernorm": "ffn_norm", "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
}
_GPT2 = {
    "transformer.wte": "token_embd", "transformer.wpe": "position_embd",
    "transformer.ln_f": "output_norm", "lm_head": "output", "ln_1": "attn_norm",
    "attn.c_attn": "attn_qkv", "attn.c_proj": "attn_output", "ln_2": "ffn_norm",
    "mlp.c_fc": "ffn_up", "mlp.c_proj": "ffn_down",
}
_LAYER = re.compile(r"^(?:model\.layers|transformer\.h)\.(\d+)\.(.+)$")


def llama_cpp_permute(weights: np.ndarray, n_head: int) -> np.ndarray:
  """convert_hf_to_gguf.py's LlamaModel.permute (rows of one q or k)."""
  return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2,
                          *weights.shape[1:])
          .swapaxes(1, 2).reshape(weights.shape))


def _gguf_name(hf_name: str, table: dict[str, str]) -> str:
  base, kind = hf_name.rsplit(".", 1)
  match = _LAYER.match(base)
  if match:
    return f"blk.{match.group(1)}.{table[match.group(2)]}.{kind}"
  return f"{table[base]}.{kind}"


def write_gguf(path: pathlib.Path, config: ModelConfig,
               tensors: dict[str, np.ndarray], f16: tuple[str, ...] = ()):
  """Writes `tensors` (HF names and layouts) and `config` as a GGUF file.

  Args:
    path: the .gguf file to write.
    config: the model configuration (written as metadata).
    tensors: HF-named tensors, as `hf_weights.to_hf_tensors` returns them.
    f16: GGUF tensor names to store as float16 instead of float32.
  """
  arch = config.model_type
  writer = gguf.GGUFWriter(str(path), arch)
  writer.add_uint32(f"{arch}.context_length", config.max_positions)
  writer.add_uint32(f"{arch}.embedding_length", config.d_model)
  writer.add_uint32(f"{arch}.block_count", config.n_layers)
  writer.add_uint32(f"{arch}.feed_forward_length", config.d_ff)
  writer.add_uint32(f"{arch}.attention.head_count", config.n_heads)
  if arch == "gpt2":
    writer.add_float32(f"{arch}.attention.layer_norm_epsilon", config.norm_eps)
  else:
    writer.add_uint32(f"{arch}.attention.head_count_kv", config.n_kv_heads)
    writer.add_float32(f"{arch}.rope.freq_base", config.rope_theta)
    writer.add_uint32(f"{arch}.rope.dimension_count", config.head_dim)
    writer.add_uint32(f"{arch}.attention.key_length", config.head_dim)
    writer.add_uint32(f"{arch}.attention.value_length", config.head_dim)
    writer.add_float32(f"{arch}.attention.layer_norm_rms_epsilon",
                       config.norm_eps)
  # Single characters of GPT-2's byte alphabet: a valid byte-level vocabulary.
  alphabet = [chr(c) for c in (*range(33, 127), *range(161, 173),
                               *range(174, 256))]
  tokens = alphabet[:config.vocab_size]
  writer.add_tokenizer_model("gpt2")
  writer.add_token_list(tokens)
  writer.add_token_types([1] * len(tokens))
  writer.add_token_merges([f"{tokens[3]} {tokens[4]}"])
  for key in ("bos_token_id", "eos_token_id"):
    if getattr(config, key) is not None:
      writer.add_uint32(f"tokenizer.ggml.{key}", getattr(config, key))
  table = _GPT2 if arch == "gpt2" else _LLAMA
  for hf_name, tensor in tensors.items():
    name = _gguf_name(hf_name, table)
    tensor = np.asarray(tensor, np.float32)
    if arch == "llama" and ".attn_q." in name:
      tensor = llama_cpp_permute(tensor, config.n_heads)
    elif arch == "llama" and ".attn_k." in name:
      tensor = llama_cpp_permute(tensor, config.n_kv_heads)
    elif (arch == "gpt2" and name.endswith(".weight") and any(
        f".{t}." in name for t in ("attn_qkv", "attn_output", "ffn_up",
                                   "ffn_down"))):
      tensor = np.ascontiguousarray(tensor.T)
    if name in f16:
      tensor = tensor.astype(np.float16)
    writer.add_tensor(name, np.ascontiguousarray(tensor))
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()
