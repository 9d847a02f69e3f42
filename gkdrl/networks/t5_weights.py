"""Conversion between Hugging Face T5 tensors and our T5 parameters.

Hugging Face names (`T5ForConditionalGeneration`, nn.Linear weights stored
[out, in]; ours are hk.Linear [in, out] with a leading [N] layer axis):

  shared.weight                                   t5/shared
  lm_head.weight (untied models only)             t5/unembed
  {stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight
                                                  t5/{stack}/relative_bias
  {stack}.block.N.layer.0.SelfAttention.{q,k,v,o} .../self_attention/...
  {stack}.block.N.layer.0.layer_norm              .../self_attn_norm
  decoder.block.N.layer.1.EncDecAttention.{q,k,v,o}
                                                  .../cross_attention/...
  decoder.block.N.layer.1.layer_norm              .../cross_attn_norm
  {stack}.block.N.layer.F.DenseReluDense.wi       .../mlp/up (v1.0)
  {stack}.block.N.layer.F.DenseReluDense.wi_0     .../mlp/gate (v1.1)
  {stack}.block.N.layer.F.DenseReluDense.wi_1     .../mlp/up (v1.1)
  {stack}.block.N.layer.F.DenseReluDense.wo       .../mlp/down
  {stack}.block.N.layer.F.layer_norm              .../mlp_norm
  {stack}.final_layer_norm                        t5/{stack}/final_norm

with F = 1 in the encoder and 2 in the decoder. `encoder.embed_tokens` and
`decoder.embed_tokens` are copies of `shared` and are not read.
"""

import dataclasses
import functools
from typing import Iterable

import jax
import jax.numpy as jnp
import numpy as np

from gkdrl.networks import hf_weights
from gkdrl.networks import t5 as t5_lib
from gkdrl.networks.t5_config import T5Config

_LM_HEAD = "lm_head.weight"
# Tensors that checkpoints may hold and that we do not need.
_IGNORED = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight",
            "decoder.block.0.layer.1.EncDecAttention."
            "relative_attention_bias.weight")


@functools.lru_cache(maxsize=32)
def _specs(config: T5Config) -> dict[tuple[str, str], tuple[str, bool]]:
  """(module, param) -> (HF name with "{i}" for the layer, transposed)."""
  specs = {(t5_lib.SHARED, "embeddings"): ("shared.weight", False),
           (t5_lib.UNEMBED, "w"): (_LM_HEAD, True)}
  mlp = ({"gate": "wi_0", "up": "wi_1", "down": "wo"} if config.gated_mlp
         else {"up": "wi", "down": "wo"})
  for stack in ("encoder", "decoder"):
    ours, theirs = f"t5/{stack}", f"{stack}.block.{{i}}.layer"
    specs[(f"{ours}/relative_bias", "embeddings")] = (
        f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias."
        "weight", False)
    specs[(f"{ours}/final_norm", "scale")] = (
        f"{stack}.final_layer_norm.weight", False)
    blocks = [("self_attention", "self_attn_norm", "0.SelfAttention")]
    if stack == "decoder":
      blocks.append(("cross_attention", "cross_attn_norm",
                     "1.EncDecAttention"))
    for attention, norm, hf in blocks:
      specs[(f"{ours}/layers/{norm}", "scale")] = (
          f"{theirs}.{hf[0]}.layer_norm.weight", False)
      for name, short in (("query", "q"), ("key", "k"), ("value", "v"),
                          ("out", "o")):
        specs[(f"{ours}/layers/{attention}/{name}", "w")] = (
            f"{theirs}.{hf}.{short}.weight", True)
    ff = 1 if stack == "encoder" else 2
    specs[(f"{ours}/layers/mlp_norm", "scale")] = (
        f"{theirs}.{ff}.layer_norm.weight", False)
    for name, hf in mlp.items():
      specs[(f"{ours}/layers/mlp/{name}", "w")] = (
          f"{theirs}.{ff}.DenseReluDense.{hf}.weight", True)
  return specs


@functools.lru_cache(maxsize=32)
def param_shapes(config: T5Config) -> dict[tuple[str, str], tuple]:
  """Shapes of our parameters, keyed by (module, name); do not mutate."""
  shapes = jax.eval_shape(t5_lib.make_t5(config).init, jax.random.key(0))
  return {(m, n): tuple(s.shape) for m, ps in shapes.items()
          for n, s in ps.items()}


def _layers(config: T5Config, module: str) -> int | None:
  """Number of stacked layers of `module`, None outside the stacks."""
  if module.startswith(t5_lib.ENCODER_LAYERS + "/"):
    return config.n_layers
  if module.startswith(t5_lib.DECODER_LAYERS + "/"):
    return config.n_decoder_layers
  return None


def resolve_tying(config: T5Config,
                  source: hf_weights.TensorSource) -> T5Config:
  """The config with `tie_embeddings` decided by the checkpoint's tensors.

  As transformers does, the head is the shared embedding unless the
  checkpoint holds an `lm_head.weight` that differs from it (transformers 5
  writes `tie_word_embeddings=True` for every T5 and keeps the output
  scaling as its own `scale_decoder_outputs` setting).
  """
  names = set(source.names())
  tied = _LM_HEAD not in names or (
      "shared.weight" in names
      and np.array_equal(source.get(_LM_HEAD), source.get("shared.weight")))
  # `scale_decoder_outputs` is already concrete, so it does not follow.
  return dataclasses.replace(config, tie_embeddings=tied)


def load_params(config: T5Config, source: hf_weights.TensorSource,
                dtype=jnp.float32) -> dict:
  """Reads our parameters from HF-named T5 tensors.

  Args:
    config: the model configuration (decides names and expected shapes).
    source: where the tensors come from.
    dtype: dtype of the returned parameters.

  Returns:
    A Haiku params dict, every leaf a `dtype` jax array.

  Raises:
    ValueError: a tensor is missing or has the wrong shape; the message names
      the file, the tensor and the expected shape.
  """
  names = set(source.names())
  specs = _specs(config)
  params = {}
  for (module, param), shape in param_shapes(config).items():
    hf_name, transposed = specs[(module, param)]
    n = _layers(config, module)
    layer_shape = shape if n is None else shape[1:]
    expected = tuple(reversed(layer_shape)) if transposed else layer_shape
    tensors = []
    for i in range(n or 1):
      name = hf_name.format(i=i)
      if name not in names:
        raise ValueError(
            f"{source.where()}: missing tensor {name!r} (expected shape "
            f"{expected}) for {config.architecture}.")
      tensor = np.asarray(source.get(name))
      if tuple(tensor.shape) != expected:
        raise ValueError(
            f"{source.where(name)}: tensor {name!r} has shape "
            f"{tuple(tensor.shape)}, expected {expected} for {config}.")
      tensors.append(tensor.T if transposed else tensor)
    value = tensors[0] if n is None else np.stack(tensors)
    params.setdefault(module, {})[param] = jnp.asarray(value, dtype=dtype)
  return params


def unused_tensors(config: T5Config, names: Iterable[str]) -> list[str]:
  """Names in a checkpoint that `load_params` does not read (for warnings)."""
  used = set(_IGNORED) | {_LM_HEAD}
  for key in param_shapes(config):
    hf_name = _specs(config)[key][0]
    used.update(hf_name.format(i=i)
                for i in range(_layers(config, key[0]) or 1))
  return sorted(set(names) - used)


def to_hf_tensors(config: T5Config, params: dict) -> dict[str, np.ndarray]:
  """Our parameters as HF-named NumPy tensors (what `save_pretrained`
  writes); a tied head is not written, as transformers does."""
  specs = _specs(config)
  out = {}
  for module, leaves in params.items():
    for param, value in leaves.items():
      hf_name, transposed = specs[(module, param)]
      value = np.asarray(value)
      n = _layers(config, module)
      for i in range(n or 1):
        tensor = value if n is None else value[i]
        out[hf_name.format(i=i)] = np.ascontiguousarray(
            tensor.T if transposed else tensor)
  return out
