"""Reading DeBERTa-v2 / v3 weights from a local Hugging Face directory.

Supported checkpoints: `DebertaV2Model` (encoder only) and
`DebertaV2ForSequenceClassification` (encoder, ContextPooler and
classifier), `model_type` "deberta-v2" (DeBERTa-v3 checkpoints use it too).
Weights are read from safetensors with `encoder_weights.read_safetensors`.
"""

import pathlib
from typing import Any

import jax.numpy as jnp
import numpy as np

from gkdrl import validation
from gkdrl.reward_models import deberta
from gkdrl.reward_models import encoder_weights

MODEL_TYPES = ("deberta-v2",)
PREFIX = "deberta."


def _pos_att_type(value) -> tuple[str, ...]:
  if value is None:
    return ()
  if isinstance(value, str):
    value = value.lower().split("|")
  terms = tuple(str(x).strip().lower() for x in value if str(x).strip())
  unknown = [t for t in terms if t not in deberta.POSITION_TERMS]
  if unknown:
    validation.fail("config.json pos_att_type", value,
                    f"terms come from {deberta.POSITION_TERMS}")
  return terms


def deberta_config_from_hf(
    hf_config: dict[str, Any], *, num_labels: int = 0
) -> deberta.DebertaConfig:
  """Converts an HF DeBERTa-v2/v3 `config.json` dictionary.

  Args:
    hf_config: the parsed config.json.
    num_labels: K for a classification head, 0 for the encoder alone.

  Returns:
    The matching `DebertaConfig`.

  Raises:
    ValueError: another model type, or settings this implementation lacks
      (`attention_head_size` other than D / H, a pooler width other than D).
  """
  get = hf_config.get
  validation.check_choice("config.json model_type", get("model_type"),
                          MODEL_TYPES)
  hidden, heads = hf_config["hidden_size"], hf_config["num_attention_heads"]
  head_size = get("attention_head_size")
  if head_size is not None and head_size * heads != hidden:
    validation.fail("config.json attention_head_size", head_size,
                    f"only hidden_size / num_attention_heads = "
                    f"{hidden // heads} is supported")
  pooler = get("pooler_hidden_size", hidden)
  if pooler != hidden:
    validation.fail("config.json pooler_hidden_size", pooler,
                    f"only hidden_size={hidden} is supported")
  norm = [x.strip() for x in str(get("norm_rel_ebd", "none")).lower()
          .split("|")]
  embedding = get("embedding_size")
  return deberta.DebertaConfig(
      vocab_size=hf_config["vocab_size"],
      hidden_size=hidden,
      num_layers=hf_config["num_hidden_layers"],
      num_heads=heads,
      intermediate_size=hf_config["intermediate_size"],
      embedding_size=None if embedding in (None, hidden) else embedding,
      max_position_embeddings=get("max_position_embeddings", 512),
      type_vocab_size=get("type_vocab_size", 0),
      layer_norm_eps=get("layer_norm_eps", 1e-7),
      hidden_act=get("hidden_act", "gelu"),
      pooler_hidden_act=get("pooler_hidden_act", "gelu"),
      pad_token_id=get("pad_token_id") or 0,
      position_biased_input=bool(get("position_biased_input", True)),
      relative_attention=bool(get("relative_attention", False)),
      pos_att_type=_pos_att_type(get("pos_att_type")),
      max_relative_positions=get("max_relative_positions", -1),
      position_buckets=get("position_buckets", -1),
      share_att_key=bool(get("share_att_key", False)),
      norm_rel_ebd="layer_norm" if "layer_norm" in norm else "none",
      conv_kernel_size=get("conv_kernel_size", 0),
      conv_groups=get("conv_groups", 1),
      conv_act=get("conv_act", "tanh"),
      num_labels=num_labels,
  )


def _linear(names, ours, theirs):
  names[(ours, "w")] = (f"{theirs}.weight", "T")
  names[(ours, "b")] = (f"{theirs}.bias", None)


def _norm(names, ours, theirs):
  names[(ours, "scale")] = (f"{theirs}.weight", None)
  names[(ours, "offset")] = (f"{theirs}.bias", None)


def _hf_names(config: deberta.DebertaConfig) -> dict[tuple[str, str], tuple]:
  """(haiku module, param) -> (HF tensor name, layout change or None)."""
  names = {}
  tables = ["word_embeddings"]
  if config.position_biased_input:
    tables.append("position_embeddings")
  if config.type_vocab_size:
    tables.append("token_type_embeddings")
  for table in tables:
    names[(f"deberta/{table}", "embeddings")] = (
        f"embeddings.{table}.weight", None)
  if config.embedding_size:
    names[("deberta/embed_proj", "w")] = ("embeddings.embed_proj.weight", "T")
  _norm(names, "deberta/embeddings_layer_norm", "embeddings.LayerNorm")
  if config.relative_attention:
    names[("deberta", "rel_embeddings")] = (
        "encoder.rel_embeddings.weight", None)
    if config.norm_rel_ebd == "layer_norm":
      _norm(names, "deberta/rel_layer_norm", "encoder.LayerNorm")
  if config.conv_kernel_size:
    names[("deberta/conv", "w")] = ("encoder.conv.conv.weight", "conv")
    names[("deberta/conv", "b")] = ("encoder.conv.conv.bias", None)
    _norm(names, "deberta/conv/layer_norm", "encoder.conv.LayerNorm")
  linears = {"query": "attention.self.query_proj",
             "key": "attention.self.key_proj",
             "value": "attention.self.value_proj",
             "attention_output": "attention.output.dense"}
  if config.relative_attention and not config.share_att_key:
    if "c2p" in config.pos_att_type:
      linears["pos_key"] = "attention.self.pos_key_proj"
    if "p2c" in config.pos_att_type:
      linears["pos_query"] = "attention.self.pos_query_proj"
  for i in range(config.num_layers):
    ours, theirs = f"deberta/layer_{i}", f"encoder.layer.{i}"
    for module, hf in linears.items():
      _linear(names, f"{ours}/attention/{module}", f"{theirs}.{hf}")
    _norm(names, f"{ours}/attention/attention_layer_norm",
          f"{theirs}.attention.output.LayerNorm")
    _linear(names, f"{ours}/intermediate", f"{theirs}.intermediate.dense")
    _linear(names, f"{ours}/output", f"{theirs}.output.dense")
    _norm(names, f"{ours}/output_layer_norm", f"{theirs}.output.LayerNorm")
  return {k: (PREFIX + n, t) for k, (n, t) in names.items()}


def _layout(value: np.ndarray, change: str | None) -> np.ndarray:
  if change == "T":
    return value.T
  if change == "conv":  # torch Conv1d [out, in/groups, k] -> [k, in, out]
    return value.transpose(2, 1, 0)
  return value


def convert_params(
    tensors: dict[str, np.ndarray], config: deberta.DebertaConfig
) -> dict[str, dict[str, np.ndarray]]:
  """Maps HF tensors to the Haiku parameter tree of `deberta`.

  Args:
    tensors: HF tensor name -> array, as `read_safetensors` returns; a
      `DebertaV2Model` checkpoint's names (no "deberta." prefix) work too.
    config: the target config; with `num_labels > 0` the pooler and
      classifier are converted too.

  Returns:
    Haiku params (NumPy float32), checked against the model's shapes.
  """
  tensors = {
      k.replace("LayerNorm.gamma", "LayerNorm.weight").replace(
          "LayerNorm.beta", "LayerNorm.bias"): v
      for k, v in tensors.items()}
  if f"{PREFIX}embeddings.word_embeddings.weight" not in tensors:
    tensors.update({PREFIX + k: v for k, v in tensors.items()
                    if k.startswith(("embeddings.", "encoder."))})
  names = _hf_names(config)
  if config.num_labels:
    _linear(names, "pooler", "pooler.dense")
    _linear(names, "classifier", "classifier")
  missing = [n for n, _ in names.values() if n not in tensors]
  if missing:
    raise ValueError(
        f"The checkpoint lacks {len(missing)} DeBERTa tensors, e.g. "
        f"{missing[:6]}; it holds e.g. {sorted(tensors)[:6]}."
    )
  params = {}
  for (module, param), (name, change) in names.items():
    params.setdefault(module, {})[param] = _layout(tensors[name], change)
  encoder_weights.check_param_shapes(
      params, deberta.param_shapes(config, with_head=bool(config.num_labels)))
  return params


def load_deberta(
    path: str | pathlib.Path, *, num_labels: int = 0
) -> tuple[deberta.DebertaConfig, Any]:
  """Loads a DeBERTa-v2/v3 encoder (and optionally its head).

  Args:
    path: local HF directory (config.json + safetensors).
    num_labels: 0 for the encoder alone, K to also load the pooler and
      classifier of a `DebertaV2ForSequenceClassification`.

  Returns:
    `(config, params)` with params as float32 `jax.Array`s for
    `make_deberta(config)` or `make_deberta_classifier(config)`.
  """
  config = deberta_config_from_hf(
      encoder_weights.read_config(path), num_labels=num_labels)
  params = convert_params(encoder_weights.read_safetensors(path), config)
  return config, {
      m: {p: jnp.asarray(v) for p, v in g.items()} for m, g in params.items()
  }
