"""Model families: what loading and saving need to know about each one.

`from_pretrained` and `save_pretrained` (gkdrl/networks/checkpoint.py) look a
family up once, from config.json's `model_type` or from a model's config,
and call its functions; nothing else compares family names.

  decoder-only  gpt2, llama, qwen2 (SmolLM2)  ModelConfig  make_model
  t5            t5, mt5 (T5 v1.0, v1.1, Flan)  T5Config     make_t5
"""

from typing import Any, Callable, NamedTuple

from gkdrl import validation
from gkdrl.networks import hf_weights
from gkdrl.networks import model as model_lib
from gkdrl.networks import t5 as t5_lib
from gkdrl.networks import t5_weights
from gkdrl.networks.config import MODEL_TYPES
from gkdrl.networks.config import ModelConfig
from gkdrl.networks.t5_config import T5_MODEL_TYPES
from gkdrl.networks.t5_config import T5Config


class Family(NamedTuple):
  """How one model family is configured, built, read and written.

  Attributes:
    name: the family's name.
    config_from_hf: config.json dictionary -> config.
    make_model: config -> model (`LanguageModel`, `EncoderDecoderModel`).
    resolve: `(config, tensor source) -> config`, settings that only the
      tensors tell (whether T5's head is tied).
    load_params: `(config, source, dtype) -> params`.
    unused_tensors: `(config, names) -> names load_params does not read`.
    to_hf_tensors: `(config, params) -> {HF name: NumPy tensor}`.
    generation_config: config -> generation_config.json dictionary.
  """

  name: str
  config_from_hf: Callable[[dict[str, Any]], Any]
  make_model: Callable[[Any], Any]
  resolve: Callable[[Any, hf_weights.TensorSource], Any]
  load_params: Callable[..., dict]
  unused_tensors: Callable[..., list[str]]
  to_hf_tensors: Callable[..., dict]
  generation_config: Callable[[Any], dict[str, Any]]


def _ids(config, names: tuple[str, ...]) -> dict[str, Any]:
  return {name: getattr(config, name) for name in names
          if getattr(config, name) is not None}


DECODER_ONLY = Family(
    name="decoder-only", config_from_hf=ModelConfig.from_hf_config,
    make_model=model_lib.make_model, resolve=lambda config, source: config,
    load_params=hf_weights.load_params,
    unused_tensors=hf_weights.unused_tensors,
    to_hf_tensors=hf_weights.to_hf_tensors,
    generation_config=lambda config: _ids(
        config, ("bos_token_id", "eos_token_id", "pad_token_id")))

T5 = Family(
    name="t5", config_from_hf=T5Config.from_hf_config,
    make_model=t5_lib.make_t5, resolve=t5_weights.resolve_tying,
    load_params=t5_weights.load_params,
    unused_tensors=t5_weights.unused_tensors,
    to_hf_tensors=t5_weights.to_hf_tensors,
    generation_config=lambda config: _ids(
        config, ("eos_token_id", "pad_token_id", "decoder_start_token_id")))

FAMILIES = {**{t: DECODER_ONLY for t in MODEL_TYPES},
            **{t: T5 for t in T5_MODEL_TYPES}}
_CONFIG_CLASSES = {ModelConfig: DECODER_ONLY, T5Config: T5}


def of_hf_config(hf: dict[str, Any]) -> Family:
  """The family of a config.json dictionary.

  An unknown decoder-only `model_type` is left to `ModelConfig`, whose
  error lists the supported ones; an unknown encoder-decoder one fails here.
  """
  model_type = hf.get("model_type")
  if model_type in FAMILIES:
    return FAMILIES[model_type]
  if hf.get("is_encoder_decoder", False):
    validation.fail("model_type", model_type,
                    "supported encoder-decoder types: "
                    + ", ".join(repr(t) for t in T5_MODEL_TYPES))
  return DECODER_ONLY


def of_config(config) -> Family:
  """The family of a model's config (`ModelConfig` or `T5Config`)."""
  for cls, family in _CONFIG_CLASSES.items():
    if isinstance(config, cls):
      return family
  raise TypeError(f"{type(config).__name__} is not a known model config "
                  f"({', '.join(c.__name__ for c in _CONFIG_CLASSES)}).")

