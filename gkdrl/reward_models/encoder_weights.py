"""Reading BERT / RoBERTa weights from a local Hugging Face directory.

Weights come from `model.safetensors` or a sharded
`model.safetensors.index.json`, read with the safetensors NumPy API (BF16
tensors, which NumPy cannot name, are decoded from the file's raw bytes with
`ml_dtypes`). `pytorch_model.bin` is not read: it needs PyTorch.

Supported checkpoints: `BertModel`, `RobertaModel` (encoder only) and
`BertForSequenceClassification`, `RobertaForSequenceClassification`,
`XLMRobertaForSequenceClassification` (encoder and head).
"""

import json
import pathlib
import struct
from typing import Any

import jax.numpy as jnp
import ml_dtypes
import numpy as np

from gkdrl import networks
from gkdrl.reward_models import encoder

# HF `model_type` -> our encoder family.
MODEL_TYPES = {"bert": "bert", "roberta": "roberta", "xlm-roberta": "roberta"}
SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"


def read_config(path: str | pathlib.Path) -> dict[str, Any]:
  """The parsed `config.json` of a local HF model directory."""
  path = pathlib.Path(path)
  if not path.is_dir():
    raise FileNotFoundError(f"Model directory {str(path)!r} does not exist.")
  config_file = path / "config.json"
  if not config_file.is_file():
    raise FileNotFoundError(f"{str(path)!r} holds no config.json.")
  return json.loads(config_file.read_text())


def encoder_config_from_hf(
    hf_config: dict[str, Any], *, num_labels: int = 0
) -> encoder.EncoderConfig:
  """Converts an HF BERT/RoBERTa `config.json` dictionary.

  Args:
    hf_config: the parsed config.json.
    num_labels: C for a classification head, 0 for the encoder alone.

  Returns:
    The matching `EncoderConfig`.
  """
  model_type = hf_config.get("model_type")
  if model_type not in MODEL_TYPES:
    raise ValueError(
        f"config.json model_type={model_type!r} is not supported; allowed: "
        f"{sorted(MODEL_TYPES)}."
    )
  position_type = hf_config.get("position_embedding_type", "absolute")
  if position_type != "absolute":
    raise ValueError(
        f"config.json position_embedding_type={position_type!r}: only "
        "'absolute' is supported."
    )
  act = hf_config.get("hidden_act", "gelu")
  if act not in encoder.HF_ACTIVATIONS:
    raise ValueError(
        f"config.json hidden_act={act!r} is not supported; allowed: "
        f"{sorted(encoder.HF_ACTIVATIONS)}."
    )
  pad = hf_config.get("pad_token_id")
  family = MODEL_TYPES[model_type]
  return encoder.EncoderConfig(
      family=family,
      vocab_size=hf_config["vocab_size"],
      hidden_size=hf_config["hidden_size"],
      num_layers=hf_config["num_hidden_layers"],
      num_heads=hf_config["num_attention_heads"],
      intermediate_size=hf_config["intermediate_size"],
      max_position_embeddings=hf_config.get("max_position_embeddings", 512),
      type_vocab_size=hf_config.get("type_vocab_size", 2),
      layer_norm_eps=hf_config.get("layer_norm_eps", 1e-12),
      activation=encoder.HF_ACTIVATIONS[act],
      pad_token_id=(1 if family == "roberta" else 0) if pad is None else pad,
      num_labels=num_labels,
  )


def _read_raw(file: pathlib.Path, names: list[str]) -> dict[str, np.ndarray]:
  """Decodes tensors NumPy's safetensors reader cannot (BF16) by hand."""
  with open(file, "rb") as f:
    (header_size,) = struct.unpack("<Q", f.read(8))
    header = json.loads(f.read(header_size))
    out = {}
    for name in names:
      info = header[name]
      if info["dtype"] != "BF16":
        raise ValueError(
            f"{file.name}: tensor {name!r} has dtype {info['dtype']} that "
            "the safetensors NumPy API cannot read."
        )
      start, end = info["data_offsets"]
      f.seek(8 + header_size + start)
      data = np.frombuffer(f.read(end - start), dtype=ml_dtypes.bfloat16)
      out[name] = data.reshape(info["shape"])
  return out


def read_safetensors(path: str | pathlib.Path) -> dict[str, np.ndarray]:
  """All tensors of a local HF directory as float32 NumPy arrays.

  Args:
    path: directory holding `model.safetensors` or a sharded index.

  Returns:
    Tensor name -> array (floating tensors converted to float32).

  Raises:
    FileNotFoundError: no safetensors weights (with the conversion command
      when only `pytorch_model.bin` is present).
  """
  path = pathlib.Path(path)
  if (path / SAFETENSORS).is_file():
    files = [path / SAFETENSORS]
  elif (path / SAFETENSORS_INDEX).is_file():
    weight_map = json.loads((path / SAFETENSORS_INDEX).read_text())
    files = [path / f for f in sorted(set(weight_map["weight_map"].values()))]
  else:
    bins = sorted(p.name for p in path.glob("pytorch_model*.bin"))
    hint = (
        f" It holds {bins}, which are not supported (reading them needs "
        "PyTorch); convert them once with transformers: "
        "`AutoModelForSequenceClassification.from_pretrained(dir)"
        ".save_pretrained(dir, safe_serialization=True)`."
    ) if bins else ""
    raise FileNotFoundError(
        f"{str(path)!r} holds neither {SAFETENSORS} nor "
        f"{SAFETENSORS_INDEX}.{hint}"
    )
  tensors = {}
  for file in files:
    if not file.is_file():
      raise FileNotFoundError(f"Shard {str(file)!r} of the index is missing.")
    raw = []
    with networks.open_safetensors(file) as f:
      for name in f.keys():
        if f.get_slice(name).get_dtype() == "BF16":
          raw.append(name)
        else:
          tensors[name] = f.get_tensor(name)
    tensors.update(_read_raw(file, raw))
  return {
      k: v.astype(np.float32) if not np.issubdtype(v.dtype, np.integer) else v
      for k, v in tensors.items()
  }


def _strip_prefix(tensors: dict[str, np.ndarray], family: str):
  """Drops the `bert.` / `roberta.` prefix of a task model's encoder."""
  # Old checkpoints name LayerNorm parameters gamma/beta.
  tensors = {
      k.replace("LayerNorm.gamma", "LayerNorm.weight").replace(
          "LayerNorm.beta", "LayerNorm.bias"): v
      for k, v in tensors.items()
  }
  for prefix in (f"{family}.", ""):
    if f"{prefix}embeddings.word_embeddings.weight" in tensors:
      return {
          k[len(prefix):]: v for k, v in tensors.items()
          if k.startswith(prefix)
      }, tensors
  raise ValueError(
      f"No {family} encoder weights found (looked for "
      f"'{family}.embeddings.word_embeddings.weight' and "
      f"'embeddings.word_embeddings.weight'); the checkpoint holds e.g. "
      f"{sorted(tensors)[:8]}."
  )


def _hf_names(config: encoder.EncoderConfig) -> dict[tuple[str, str], tuple]:
  """(haiku module, param) -> (HF tensor name, transpose?)."""
  names = {
      ("encoder/word_embeddings", "embeddings"):
          ("embeddings.word_embeddings.weight", False),
      ("encoder/position_embeddings", "embeddings"):
          ("embeddings.position_embeddings.weight", False),
      ("encoder/token_type_embeddings", "embeddings"):
          ("embeddings.token_type_embeddings.weight", False),
      ("encoder/embeddings_layer_norm", "scale"):
          ("embeddings.LayerNorm.weight", False),
      ("encoder/embeddings_layer_norm", "offset"):
          ("embeddings.LayerNorm.bias", False),
  }
  linears = {
      "query": "attention.self.query", "key": "attention.self.key",
      "value": "attention.self.value",
      "attention_output": "attention.output.dense",
      "intermediate": "intermediate.dense", "output": "output.dense",
  }
  norms = {"attention_layer_norm": "attention.output.LayerNorm",
           "output_layer_norm": "output.LayerNorm"}
  for i in range(config.num_layers):
    ours, theirs = f"encoder/layer_{i}", f"encoder.layer.{i}"
    for module, hf in linears.items():
      names[(f"{ours}/{module}", "w")] = (f"{theirs}.{hf}.weight", True)
      names[(f"{ours}/{module}", "b")] = (f"{theirs}.{hf}.bias", False)
    for module, hf in norms.items():
      names[(f"{ours}/{module}", "scale")] = (f"{theirs}.{hf}.weight", False)
      names[(f"{ours}/{module}", "offset")] = (f"{theirs}.{hf}.bias", False)
  return names


def _head_names(config: encoder.EncoderConfig) -> dict[tuple[str, str], tuple]:
  if config.family == "bert":
    linears = {"classifier/pooler": "bert.pooler.dense",
               "classifier/out": "classifier"}
  else:
    linears = {"classifier/dense": "classifier.dense",
               "classifier/out_proj": "classifier.out_proj"}
  names = {}
  for module, hf in linears.items():
    names[(module, "w")] = (f"{hf}.weight", True)
    names[(module, "b")] = (f"{hf}.bias", False)
  return names


def convert_params(
    tensors: dict[str, np.ndarray], config: encoder.EncoderConfig
) -> dict[str, dict[str, np.ndarray]]:
  """Maps HF tensors to the Haiku parameter tree of `encoder`.

  Args:
    tensors: HF tensor name -> array, as `read_safetensors` returns.
    config: the target config; with `num_labels > 0` the classification head
      is converted too.

  Returns:
    Haiku params (NumPy float32), checked against the model's shapes.
  """
  body, full = _strip_prefix(tensors, config.family)
  wanted = [(k, body, n, t) for k, (n, t) in _hf_names(config).items()]
  if config.num_labels:
    wanted += [(k, full, n, t) for k, (n, t) in _head_names(config).items()]
  missing = [n for _, source, n, _ in wanted if n not in source]
  if missing:
    raise ValueError(
        f"The checkpoint lacks {len(missing)} {config.family} tensors, e.g. "
        f"{missing[:6]}."
    )
  params = {}
  for (module, param), source, name, transpose in wanted:
    value = source[name]
    params.setdefault(module, {})[param] = value.T if transpose else value
  check_param_shapes(
      params, encoder.param_shapes(config, with_head=bool(config.num_labels)))
  return params


def check_param_shapes(params, expected) -> None:
  """Raises ValueError unless `params[module][param]` has `expected`'s shape.

  Args:
    params: the loaded `{module: {param: array}}`.
    expected: `{module: {param: ShapeDtypeStruct}}` that the config implies.
  """
  for module, group in expected.items():
    for param, spec in group.items():
      got = params[module][param].shape
      if got != spec.shape:
        raise ValueError(
            f"Parameter {module}/{param} has shape {got} in the checkpoint; "
            f"the config implies {spec.shape}."
        )


def load_encoder(
    path: str | pathlib.Path, *, num_labels: int = 0
) -> tuple[encoder.EncoderConfig, Any]:
  """Loads a BERT/RoBERTa encoder (and optionally its head) from a directory.

  Args:
    path: local HF directory (config.json + safetensors).
    num_labels: 0 for the encoder alone (a `BertModel` directory or a task
      model's encoder), C to also load a sequence-classification head.

  Returns:
    `(config, params)` with params as float32 `jax.Array`s for
    `make_encoder(config)` or `make_sequence_classifier(config)`.
  """
  config = encoder_config_from_hf(read_config(path), num_labels=num_labels)
  params = convert_params(read_safetensors(path), config)
  return config, {
      m: {p: jnp.asarray(v) for p, v in g.items()} for m, g in params.items()
  }
