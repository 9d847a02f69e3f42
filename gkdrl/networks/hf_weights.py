"""Conversion between Hugging Face tensor names/layouts and our parameters.

Our parameters (see gkdrl/networks/model.py) are Haiku modules with a leading
[n_layers] axis on everything inside "lm/layers". Hugging Face checkpoints
hold one tensor per layer, named after the PyTorch modules:

  GPT-2 (`transformer.` prefix optional): wte, wpe, h.N.ln_1, h.N.attn.c_attn
    (fused q|k|v, a Conv1D stored [in, out]), h.N.attn.c_proj, h.N.ln_2,
    h.N.mlp.c_fc, h.N.mlp.c_proj, ln_f.
  Llama / Qwen2: model.embed_tokens, model.layers.N.input_layernorm,
    model.layers.N.self_attn.{q,k,v,o}_proj (nn.Linear, stored [out, in]),
    model.layers.N.post_attention_layernorm, model.layers.N.mlp.{gate,up,
    down}_proj, model.norm, lm_head.

A `TensorSource` is anything that returns HF-named NumPy tensors (a
safetensors directory, or a GGUF file translated to HF names and layouts).
"""

import functools
import json
import os
from typing import Iterable, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from gkdrl.networks import model as model_lib
from gkdrl.networks.config import ModelConfig


class TensorSource(Protocol):
  """Read access to HF-named tensors."""

  def names(self) -> Iterable[str]:
    """All tensor names."""

  def get(self, name: str) -> np.ndarray:
    """The tensor `name` in HF layout (raises KeyError when absent)."""

  def where(self, name: str | None = None) -> str:
    """The file holding `name` (or the checkpoint location) for errors."""


class _Spec(NamedTuple):
  hf_name: str  # "{i}" stands for the layer index
  kind: str  # "copy", "transpose", or "split0" / "split1" / "split2"


_LAYER = model_lib.LAYERS
_LLAMA = {
    (model_lib.EMBED, "embeddings"): _Spec("model.embed_tokens.weight",
                                           "copy"),
    (model_lib.FINAL_NORM, "scale"): _Spec("model.norm.weight", "copy"),
    (model_lib.UNEMBED, "w"): _Spec("lm_head.weight", "transpose"),
    (f"{_LAYER}/attn_norm", "scale"): _Spec(
        "model.layers.{i}.input_layernorm.weight", "copy"),
    (f"{_LAYER}/mlp_norm", "scale"): _Spec(
        "model.layers.{i}.post_attention_layernorm.weight", "copy"),
}
for _ours, _theirs in (("attention/query", "self_attn.q_proj"),
                       ("attention/key", "self_attn.k_proj"),
                       ("attention/value", "self_attn.v_proj"),
                       ("attention/out", "self_attn.o_proj"),
                       ("mlp/gate", "mlp.gate_proj"), ("mlp/up", "mlp.up_proj"),
                       ("mlp/down", "mlp.down_proj")):
  _LLAMA[(f"{_LAYER}/{_ours}", "w")] = _Spec(
      f"model.layers.{{i}}.{_theirs}.weight", "transpose")
  _LLAMA[(f"{_LAYER}/{_ours}", "b")] = _Spec(
      f"model.layers.{{i}}.{_theirs}.bias", "copy")

_GPT2 = {
    (model_lib.EMBED, "embeddings"): _Spec("wte.weight", "copy"),
    (model_lib.POSITION_EMBED, "embeddings"): _Spec("wpe.weight", "copy"),
    (model_lib.FINAL_NORM, "scale"): _Spec("ln_f.weight", "copy"),
    (model_lib.FINAL_NORM, "offset"): _Spec("ln_f.bias", "copy"),
    (model_lib.UNEMBED, "w"): _Spec("lm_head.weight", "transpose"),
}
for _ours, _theirs in (("attn_norm", "ln_1"), ("mlp_norm", "ln_2")):
  _GPT2[(f"{_LAYER}/{_ours}", "scale")] = _Spec(f"h.{{i}}.{_theirs}.weight",
                                                "copy")
  _GPT2[(f"{_LAYER}/{_ours}", "offset")] = _Spec(f"h.{{i}}.{_theirs}.bias",
                                                 "copy")
for _j, _ours in enumerate(("query", "key", "value")):
  for _param, _suffix in (("w", "weight"), ("b", "bias")):
    _GPT2[(f"{_LAYER}/attention/{_ours}", _param)] = _Spec(
        f"h.{{i}}.attn.c_attn.{_suffix}", f"split{_j}")
for _ours, _theirs in (("attention/out", "attn.c_proj"), ("mlp/up", "mlp.c_fc"),
                       ("mlp/down", "mlp.c_proj")):
  for _param, _suffix in (("w", "weight"), ("b", "bias")):
    # Conv1D weights are already [in, out], like hk.Linear.
    _GPT2[(f"{_LAYER}/{_ours}", _param)] = _Spec(
        f"h.{{i}}.{_theirs}.{_suffix}", "copy")

# Buffers and duplicates that checkpoints may hold and we do not need.
_IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias", "rotary_emb.inv_freq")


def _specs(config: ModelConfig) -> dict[tuple[str, str], _Spec]:
  return _GPT2 if config.model_type == "gpt2" else _LLAMA


@functools.lru_cache(maxsize=32)
def param_shapes(config: ModelConfig) -> dict[tuple[str, str], tuple]:
  """Shapes of our parameters, keyed by (module, name); do not mutate."""
  shapes = jax.eval_shape(model_lib.make_model(config).init,
                          jax.random.key(0))
  return {(m, n): tuple(s.shape) for m, ps in shapes.items()
          for n, s in ps.items()}


def _hf_shape(spec: _Spec, ours: tuple[int, ...]) -> tuple[int, ...]:
  """Expected HF shape of one layer's tensor given our per-layer shape."""
  if spec.kind == "transpose":
    return tuple(reversed(ours))
  if spec.kind.startswith("split"):
    return ours[:-1] + (3 * ours[-1],)
  return ours


def _gpt2_prefix(names: set[str]) -> str:
  return "transformer." if "transformer.wte.weight" in names else ""


class _Use(NamedTuple):
  """One of our parameters (or one layer of it) that an HF tensor fills."""

  key: tuple[str, str]  # (module, name)
  layer: int | None  # index on the leading [n_layers] axis, None: unstacked
  spec: _Spec
  expected: tuple[int, ...]  # the HF tensor's shape


def _plan(config: ModelConfig, source: TensorSource
          ) -> dict[str, list[_Use]]:
  """{HF tensor name: the parameters it fills}; raises on a missing one."""
  names = set(source.names())
  prefix = _gpt2_prefix(names) if config.model_type == "gpt2" else ""
  specs = _specs(config)
  plan = {}
  for (module, param), shape in param_shapes(config).items():
    spec = specs[(module, param)]
    per_layer = module.startswith(_LAYER + "/")
    expected = _hf_shape(spec, shape[1:] if per_layer else shape)
    for i in range(config.n_layers) if per_layer else [None]:
      name = prefix + spec.hf_name.format(i=i)
      if name not in names:
        raise ValueError(
            f"{source.where()}: missing tensor {name!r} (expected shape "
            f"{expected}) for {config.architecture}.")
      plan.setdefault(name, []).append(_Use((module, param), i, spec,
                                            expected))
  return plan


def _ours(tensor: np.ndarray, use: _Use, dtype) -> np.ndarray:
  """One HF tensor in our layout and `dtype` (a NumPy array)."""
  if use.spec.kind == "transpose":
    tensor = tensor.T
  elif use.spec.kind.startswith("split"):
    j, n = int(use.spec.kind[-1]), tensor.shape[-1] // 3
    tensor = tensor[..., j * n:(j + 1) * n]
  return np.asarray(tensor, dtype=dtype)


@functools.partial(jax.jit, donate_argnums=0)
def _set_layer(stacked: jax.Array, value: jax.Array, i: jax.Array):
  return jax.lax.dynamic_update_index_in_dim(stacked, value, i, 0)


def load_params(config: ModelConfig, source: TensorSource,
                dtype=jnp.float32, shardings=None) -> dict:
  """Reads our parameters from HF-named tensors, one tensor at a time.

  Tensors are read grouped by file (`source.where(name)`), so a sharded
  checkpoint is read one shard after another, and each is converted to
  `dtype` and placed on its device(s) before the next is read: the host
  holds one tensor (and its converted copy) at a time, never the whole
  model. Stacked parameters [n_layers, ...] are allocated on the device
  and filled layer by layer in place.

  Args:
    config: the model configuration (decides names and expected shapes).
    source: where the tensors come from.
    dtype: dtype of the returned parameters.
    shardings: None (the default device), or a pytree of
      `jax.sharding.Sharding`s with the structure of the parameters (e.g.
      `gkdrl.parallel.param_shardings`): each parameter is placed there.

  Returns:
    A Haiku params dict, every leaf a `dtype` jax array.

  Raises:
    ValueError: a tensor is missing or has the wrong shape; the message names
      the file, the tensor and the expected shape.
  """
  plan = _plan(config, source)
  np_dtype = jnp.dtype(dtype)
  shapes = param_shapes(config)
  where = lambda key: None if shardings is None else shardings[key[0]][key[1]]
  params = {}
  for name in sorted(plan, key=lambda n: (source.where(n), n)):
    tensor = source.get(name)
    uses = plan[name]
    if tuple(tensor.shape) != uses[0].expected:
      raise ValueError(
          f"{source.where(name)}: tensor {name!r} has shape "
          f"{tuple(tensor.shape)}, expected {uses[0].expected} for "
          f"{config}.")
    for use in uses:
      module, param = use.key
      value = _ours(tensor, use, np_dtype)
      leaves = params.setdefault(module, {})
      if use.layer is None:
        leaves[param] = jax.device_put(value, where(use.key))
        continue
      if param not in leaves:
        leaves[param] = jnp.zeros(shapes[use.key], np_dtype,
                                  device=where(use.key))
      leaves[param] = _set_layer(leaves[param], value, use.layer)
    del tensor
  return {module: {param: params[module][param] for param in leaves}
          for module, leaves in _by_module(shapes).items()}


def _by_module(shapes: dict[tuple[str, str], tuple]) -> dict[str, list]:
  modules = {}
  for module, param in shapes:
    modules.setdefault(module, []).append(param)
  return modules


def unused_tensors(config: ModelConfig, names: Iterable[str]) -> list[str]:
  """Names in a checkpoint that `load_params` does not read (for warnings)."""
  names = set(names)
  prefix = _gpt2_prefix(names) if config.model_type == "gpt2" else ""
  used = set()
  for key in param_shapes(config):
    module, spec = key[0], _specs(config)[key]
    per_layer = module.startswith(_LAYER + "/")
    for i in range(config.n_layers if per_layer else 1):
      used.add(prefix + spec.hf_name.format(i=i))
  return sorted(n for n in names - used
                if not n.endswith(_IGNORED_SUFFIXES) and n != "lm_head.weight")


def to_hf_tensors(config: ModelConfig, params: dict) -> dict[str, np.ndarray]:
  """Our parameters as HF-named NumPy tensors (what `save_pretrained` writes).

  GPT-2 names get the `transformer.` prefix and Llama/Qwen2 the `model.`
  one, as transformers writes them; a tied unembedding is not written.
  """
  prefix = "transformer." if config.model_type == "gpt2" else ""
  specs = _specs(config)
  out, fused = {}, {}
  for module, leaves in params.items():
    for param, value in leaves.items():
      spec = specs[(module, param)]
      value = np.asarray(value)
      per_layer = module.startswith(_LAYER + "/")
      for i in range(config.n_layers if per_layer else 1):
        name = spec.hf_name.format(i=i)
        if name != "lm_head.weight":
          name = prefix + name
        tensor = value[i] if per_layer else value
        if spec.kind == "transpose":
          out[name] = np.ascontiguousarray(tensor.T)
        elif spec.kind.startswith("split"):
          fused.setdefault(name, {})[int(spec.kind[-1])] = tensor
        else:
          out[name] = np.ascontiguousarray(tensor)
  for name, parts in fused.items():
    out[name] = np.concatenate([parts[j] for j in range(3)], axis=-1)
  return out


def open_safetensors(path):
  """`safetensors.safe_open(path)` with an error that says what is wrong.

  A truncated or damaged file makes safetensors fail with a bare
  "incomplete metadata" or "header too small". This names the file, says
  that it is truncated or corrupt and, when its header can still be read,
  how large it should be.

  Raises:
    ValueError: the file cannot be opened as safetensors.
  """
  import safetensors  # pylint: disable=g-import-not-at-top

  try:
    return safetensors.safe_open(str(path), framework="np")
  except safetensors.SafetensorError as e:
    raise ValueError(safetensors_problem(path, e)) from e


def safetensors_problem(path, error) -> str:
  """The message for a safetensors file that failed to open with `error`."""
  size = os.path.getsize(path)
  expected = _described_size(path)
  advice = "Copy or download it again."
  if expected is not None and expected != size:
    state = "truncated" if size < expected else "corrupt"
    return (f"{path}: {state} safetensors file: it is {size:,} bytes, but "
            f"its header describes {expected:,} bytes ({error}). {advice}")
  return (f"{path}: truncated or corrupt safetensors file of {size:,} bytes "
          f"({error}); its header does not tell its full size. {advice}")


def _described_size(path) -> int | None:
  """8 + header + data bytes as the header lays them out, or None."""
  with open(path, "rb") as f:
    head = f.read(8)
    if len(head) < 8:
      return None
    header_length = int.from_bytes(head, "little")
    if header_length > os.path.getsize(path) - 8:
      return None
    try:
      header = json.loads(f.read(header_length))
      ends = [entry["data_offsets"][1] for name, entry in header.items()
              if name != "__metadata__"]
    except (ValueError, TypeError, KeyError, IndexError):
      return None
  return 8 + header_length + max(ends, default=0)
