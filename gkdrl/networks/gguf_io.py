"""Reading GGUF files (llama.cpp's format) with the `gguf` package.

A GGUF file carries the config as metadata (`llama.block_count`,
`llama.attention.head_count_kv`, `llama.rope.freq_base`, ...) and tensors
under llama.cpp names (`token_embd.weight`, `blk.N.attn_q.weight`,
`output_norm.weight`, ...), possibly quantised. `open_gguf` translates both to
Hugging Face terms so that `hf_weights.load_params` does the rest:

- quantised tensors are dequantised to float32 by `gguf.quants.dequantize`;
- llama.cpp's converter permutes the rows of Llama's q/k projections so that
  its rope rotates adjacent pairs (x0, x1), (x2, x3), ...; Hugging Face
  rotates (x_i, x_{i + Dh/2}). We undo that permutation (Qwen2 and GPT-2 are
  written unpermuted);
- GPT-2's Conv1D weights were transposed to [out, in] by the converter; we
  transpose them back.
"""

import functools
import pathlib
import re

import gguf
import numpy as np

from gkdrl.networks.config import ModelConfig

ARCHITECTURES = ("llama", "qwen2", "gpt2")

_LLAMA_NAMES = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
    "attn_norm": "model.layers.{i}.input_layernorm",
    "attn_q": "model.layers.{i}.self_attn.q_proj",
    "attn_k": "model.layers.{i}.self_attn.k_proj",
    "attn_v": "model.layers.{i}.self_attn.v_proj",
    "attn_output": "model.layers.{i}.self_attn.o_proj",
    "ffn_norm": "model.layers.{i}.post_attention_layernorm",
    "ffn_gate": "model.layers.{i}.mlp.gate_proj",
    "ffn_up": "model.layers.{i}.mlp.up_proj",
    "ffn_down": "model.layers.{i}.mlp.down_proj",
}
_GPT2_NAMES = {
    "token_embd": "transformer.wte",
    "position_embd": "transformer.wpe",
    "output_norm": "transformer.ln_f",
    "output": "lm_head",
    "attn_norm": "transformer.h.{i}.ln_1",
    "attn_qkv": "transformer.h.{i}.attn.c_attn",
    "attn_output": "transformer.h.{i}.attn.c_proj",
    "ffn_norm": "transformer.h.{i}.ln_2",
    "ffn_up": "transformer.h.{i}.mlp.c_fc",
    "ffn_down": "transformer.h.{i}.mlp.c_proj",
}
_GPT2_TRANSPOSED = ("attn_qkv", "attn_output", "ffn_up", "ffn_down")
_NAME = re.compile(r"^(?:blk\.(\d+)\.)?(\w+)\.(weight|bias)$")


def read(path: str | pathlib.Path) -> gguf.GGUFReader:
  """A (memory-mapped) GGUFReader, shared by the model and tokenizer loaders.

  Parsing the metadata of a 49k-token vocabulary takes seconds, so readers
  are cached per file version.
  """
  path = pathlib.Path(path).resolve()
  stat = path.stat()
  return _cached_reader(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=4)
def _cached_reader(path: str, mtime_ns: int, size: int) -> gguf.GGUFReader:
  del mtime_ns, size  # Only part of the cache key.
  try:
    return gguf.GGUFReader(path)
  except Exception as e:  # gguf raises ValueError/struct errors on bad files.
    raise ValueError(f"{path}: not a readable GGUF file ({e}).") from e


def metadata(reader: gguf.GGUFReader) -> dict:
  """Scalar and string metadata of a GGUF file (arrays left out)."""
  out = {}
  for key, field in reader.fields.items():
    if field.types and field.types[0] == gguf.GGUFValueType.ARRAY:
      continue
    out[key] = field.contents()
  return out


def string_array(reader: gguf.GGUFReader, key: str) -> list | None:
  """The array field `key` as a Python list, or None when absent."""
  field = reader.fields.get(key)
  return None if field is None else field.contents()


def config_from_metadata(meta: dict, tensor_names: set[str],
                         n_tokens: int | None, where: str) -> ModelConfig:
  """Builds a `ModelConfig` from GGUF metadata.

  Args:
    meta: scalar metadata (`metadata(reader)`).
    tensor_names: GGUF tensor names (tied embeddings have no output.weight).
    n_tokens: length of tokenizer.ggml.tokens, used when the file has no
      `<arch>.vocab_size`.
    where: the file, for error messages.
  """
  arch = meta.get("general.architecture")
  if arch not in ARCHITECTURES:
    raise ValueError(f"{where}: unsupported GGUF architecture {arch!r}; "
                     f"supported: {ARCHITECTURES}.")

  def get(key, default=None):
    value = meta.get(f"{arch}.{key}", default)
    if value is None:
      raise ValueError(f"{where}: missing GGUF metadata key {arch}.{key}.")
    return value

  scaling = meta.get(f"{arch}.rope.scaling.type", "none")
  if scaling not in ("none", None):
    raise ValueError(f"{where}: unsupported rope scaling {scaling!r}.")
  n_heads = int(get("attention.head_count"))
  d_model = int(get("embedding_length"))
  ids = dict(bos_token_id=meta.get("tokenizer.ggml.bos_token_id"),
             eos_token_id=meta.get("tokenizer.ggml.eos_token_id"),
             pad_token_id=meta.get("tokenizer.ggml.padding_token_id"))
  common = dict(
      vocab_size=int(get("vocab_size", n_tokens)), d_model=d_model,
      n_layers=int(get("block_count")), n_heads=n_heads,
      d_ff=int(get("feed_forward_length")),
      max_positions=int(get("context_length", 2048)),
      tie_embeddings="output.weight" not in tensor_names,
      **{k: None if v is None else int(v) for k, v in ids.items()})
  if arch == "gpt2":
    return ModelConfig(
        model_type="gpt2", norm="layer",
        norm_eps=float(get("attention.layer_norm_epsilon", 1e-5)),
        activation="gelu_new", gated_mlp=False, position="learned",
        qkv_bias=True, out_bias=True, mlp_bias=True, **common)
  head_dim = int(meta.get(f"{arch}.attention.key_length",
                          meta.get(f"{arch}.rope.dimension_count",
                                   d_model // n_heads)))
  has_bias = "blk.0.attn_q.bias" in tensor_names
  return ModelConfig(
      model_type=arch, n_kv_heads=int(get("attention.head_count_kv", n_heads)),
      head_dim=head_dim, norm="rms",
      norm_eps=float(get("attention.layer_norm_rms_epsilon", 1e-6)),
      activation="silu", gated_mlp=True, position="rope",
      rope_theta=float(get("rope.freq_base", 10000.0)),
      qkv_bias=has_bias, out_bias=arch == "llama" and has_bias,
      mlp_bias=False, **common)


def unpermute_rope_rows(weight: np.ndarray, n_heads: int) -> np.ndarray:
  """Undoes llama.cpp's per-head row interleaving of q/k projections.

  llama.cpp's converter reshapes each head's rows [Dh] as [2, Dh/2] and
  swaps the axes, so row 2i holds HF row i and row 2i+1 holds HF row
  i + Dh/2. This is the inverse: [Dh/2, 2] -> [2, Dh/2].

  Args:
    weight: [n_heads * Dh, ...] rows of the GGUF q or k tensor (or bias).
    n_heads: number of heads in it (the kv heads for k).

  Returns:
    The rows in Hugging Face order, same shape.
  """
  head_dim = weight.shape[0] // n_heads
  rest = weight.shape[1:]
  w = weight.reshape(n_heads, head_dim // 2, 2, *rest)
  return np.swapaxes(w, 1, 2).reshape(weight.shape)


class GGUFSource:
  """HF-named tensors read from a GGUF file (see module docstring)."""

  def __init__(self, path: pathlib.Path, reader: gguf.GGUFReader,
               config: ModelConfig):
    self._path = path
    self._config = config
    self._tensors = {t.name: t for t in reader.tensors}
    table = _GPT2_NAMES if config.model_type == "gpt2" else _LLAMA_NAMES
    self._hf_to_gguf = {}
    for name in self._tensors:
      match = _NAME.match(name)
      if match is None or match.group(2) not in table:
        continue
      layer, base, kind = match.groups()
      hf = table[base].format(i=layer) + "." + kind
      self._hf_to_gguf[hf] = (name, base)

  def names(self):
    return self._hf_to_gguf.keys()

  def where(self, name: str | None = None) -> str:
    if name in self._hf_to_gguf:
      return f"{self._path} (GGUF tensor {self._hf_to_gguf[name][0]!r})"
    return str(self._path)

  def get(self, name: str) -> np.ndarray:
    gguf_name, base = self._hf_to_gguf[name]
    tensor = self._tensors[gguf_name]
    value = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
    # GGUF lists dims innermost first; NumPy wants them outermost first.
    value = value.reshape(tuple(int(d) for d in reversed(tensor.shape)))
    config = self._config
    if config.model_type == "llama" and base == "attn_q":
      value = unpermute_rope_rows(value, config.n_heads)
    elif config.model_type == "llama" and base == "attn_k":
      value = unpermute_rope_rows(value, config.n_kv_heads)
    elif (config.model_type == "gpt2" and base in _GPT2_TRANSPOSED
          and gguf_name.endswith(".weight")):
      value = value.T
    return value


def open_gguf(path: pathlib.Path) -> tuple[ModelConfig, GGUFSource]:
  """The config and an HF-named tensor source of the GGUF file `path`."""
  reader = read(path)
  tokens = reader.fields.get("tokenizer.ggml.tokens")
  n_tokens = None if tokens is None else len(tokens.data)
  config = config_from_metadata(metadata(reader),
                                {t.name for t in reader.tensors}, n_tokens,
                                str(path))
  return config, GGUFSource(path, reader, config)
