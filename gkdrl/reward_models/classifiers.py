"""Which Haiku model reads a local HF sequence-classification checkpoint.

One registry maps config.json's `model_type` to a loader, so callers such as
`EntailmentReward` never compare architecture names:

    classifier = load_sequence_classifier(path, num_labels=3)
    logits = jax.jit(classifier.apply)(classifier.params, ids, mask, types)

Registered: "bert", "roberta", "xlm-roberta" (`encoder`) and "deberta-v2"
(`deberta`, DeBERTa-v2 and v3 checkpoints).
"""

from collections.abc import Callable
import pathlib
from typing import Any, NamedTuple

from gkdrl import validation
from gkdrl.reward_models import deberta
from gkdrl.reward_models import deberta_weights
from gkdrl.reward_models import encoder
from gkdrl.reward_models import encoder_weights


class SequenceClassifier(NamedTuple):
  """A loaded classifier and what its callers need to feed it.

  Attributes:
    config: the model's own config (`EncoderConfig`, `DebertaConfig`).
    params: its Haiku parameters (float32 `jax.Array`s).
    apply: `apply(params, input_ids [N, L], attention_mask [N, L],
      token_type_ids [N, L]) -> [N, K]` float32 logits (not jitted).
    max_tokens: the longest input the model reads.
    pad_token_id: the id to pad inputs with.
    vocab_size: number of token ids.
    uses_token_types: whether segment ids reach the model (False when it
      has at most one segment row; callers then pass zeros).
  """

  config: Any
  params: Any
  apply: Callable[..., Any]
  max_tokens: int
  pad_token_id: int
  vocab_size: int
  uses_token_types: bool


def _load_encoder(path, num_labels: int) -> SequenceClassifier:
  config, params = encoder_weights.load_encoder(path, num_labels=num_labels)
  return SequenceClassifier(
      config=config, params=params,
      apply=encoder.make_sequence_classifier(config).apply,
      max_tokens=config.max_tokens, pad_token_id=config.pad_token_id,
      vocab_size=config.vocab_size,
      uses_token_types=config.type_vocab_size > 1)


def _load_deberta(path, num_labels: int) -> SequenceClassifier:
  config, params = deberta_weights.load_deberta(path, num_labels=num_labels)
  return SequenceClassifier(
      config=config, params=params,
      apply=deberta.make_deberta_classifier(config).apply,
      max_tokens=config.max_tokens, pad_token_id=config.pad_token_id,
      vocab_size=config.vocab_size,
      uses_token_types=config.type_vocab_size > 1)


ARCHITECTURES: dict[str, Callable[[Any, int], SequenceClassifier]] = {
    **{name: _load_encoder for name in encoder_weights.MODEL_TYPES},
    **{name: _load_deberta for name in deberta_weights.MODEL_TYPES},
}


def register_architecture(
    model_type: str, loader: Callable[[Any, int], SequenceClassifier]
) -> None:
  """Adds (or replaces) the loader of a config.json `model_type`."""
  if not isinstance(model_type, str) or not model_type:
    validation.fail("model_type", model_type, "it must be a non-empty str")
  ARCHITECTURES[model_type] = loader


def load_sequence_classifier(
    path: str | pathlib.Path, *, num_labels: int
) -> SequenceClassifier:
  """Loads a `*ForSequenceClassification` directory by its `model_type`.

  Args:
    path: local HF directory (config.json + safetensors).
    num_labels: K, the number of classes of the head.

  Returns:
    The `SequenceClassifier`.

  Raises:
    ValueError: a `model_type` no loader is registered for.
  """
  model_type = encoder_weights.read_config(path).get("model_type")
  validation.check_choice(f"{pathlib.Path(path)}/config.json model_type",
                          model_type, sorted(ARCHITECTURES))
  return ARCHITECTURES[model_type](path, num_labels)
