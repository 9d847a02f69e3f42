"""Configuration of the T5 encoder-decoder models (T5, T5 v1.1, Flan-T5, mT5).

  variant          feed-forward            unembedding
  T5 v1.0          relu, `wo(relu(wi x))`  the shared embedding, with the
                                           decoder output scaled by D^-0.5
  v1.1, Flan, mT5  gated-gelu              its own lm_head, no scaling
                   `wo(gelu(wi_0 x) * wi_1 x)`

Every variant uses relative position buckets (bidirectional in the encoder,
causal in the decoder; the first layer holds the table and the others share
its bias), an RMS norm without bias or mean subtraction, and unscaled
attention scores (T5 folds 1/sqrt(Dh) into the query weights' init).
`from_hf_config` / `to_hf_config` convert to and from a Hugging Face
`config.json` dictionary.
"""

import dataclasses
from typing import Any

from gkdrl import validation

T5_MODEL_TYPES = ("t5", "mt5")
T5_ACTIVATIONS = ("relu", "gelu", "gelu_new", "silu")

# The last part of HF's `feed_forward_proj` ("relu", "gated-gelu", ...) ->
# our activation. A gated "gelu" is the tanh approximation (HF maps
# "gated-gelu" to gelu_new), a plain one is exact.
_HF_ACTIVATIONS = {"relu": "relu", "gelu": "gelu", "gelu_new": "gelu_new",
                   "gelu_pytorch_tanh": "gelu_new", "silu": "silu",
                   "swish": "silu"}
_ARCHITECTURES = {"t5": "T5ForConditionalGeneration",
                  "mt5": "MT5ForConditionalGeneration"}


@dataclasses.dataclass(frozen=True, kw_only=True)
class T5Config:
  """Shape and switches of a T5-family encoder-decoder transformer.

  Attributes:
    model_type: Hugging Face family, "t5" or "mt5" (same architecture; decides
      the class named in config.json).
    vocab_size: V, number of token ids (shared by encoder and decoder).
    d_model: D, residual stream width.
    n_layers: number of encoder blocks.
    n_decoder_layers: number of decoder blocks; None means `n_layers`.
    n_heads: H, attention heads.
    head_dim: Dh, width of one head (HF `d_kv`; H * Dh need not equal D).
    d_ff: hidden width of the feed-forward block.
    activation: feed-forward non-linearity, one of T5_ACTIVATIONS.
    gated_mlp: `down(act(gate(x)) * up(x))` (v1.1) when True, otherwise
      `down(act(up(x)))` (v1.0).
    relative_buckets: number of relative position buckets.
    relative_max_distance: distance from which all positions share a bucket.
    norm_eps: epsilon added to the mean square in every norm.
    tie_embeddings: whether the unembedding is the transposed shared
      embedding (v1.0) rather than a separate lm_head (v1.1).
    scale_decoder_outputs: whether the decoder output is multiplied by
      d_model**-0.5 before the unembedding; None means `tie_embeddings` for
      "t5" and False for "mt5" (`MT5ForConditionalGeneration` never
      scales, so "mt5" does not allow True).
    pad_token_id: padding id.
    eos_token_id: end-of-sequence id.
    decoder_start_token_id: the decoder's first input token (T5: the pad id).
  """

  model_type: str = "t5"
  vocab_size: int
  d_model: int
  n_layers: int
  n_decoder_layers: int | None = None
  n_heads: int
  head_dim: int
  d_ff: int
  activation: str = "relu"
  gated_mlp: bool = False
  relative_buckets: int = 32
  relative_max_distance: int = 128
  norm_eps: float = 1e-6
  tie_embeddings: bool = True
  scale_decoder_outputs: bool | None = None
  pad_token_id: int = 0
  eos_token_id: int = 1
  decoder_start_token_id: int = 0

  def __post_init__(self):
    if self.n_decoder_layers is None:
      object.__setattr__(self, "n_decoder_layers", self.n_layers)
    if self.scale_decoder_outputs is None:
      object.__setattr__(self, "scale_decoder_outputs",
                         self.tie_embeddings and self.model_type == "t5")
    for name in ("vocab_size", "d_model", "n_layers", "n_decoder_layers",
                 "n_heads", "head_dim", "d_ff", "relative_buckets",
                 "relative_max_distance"):
      validation.check_int(name, getattr(self, name), minimum=1)
    validation.check_choice("model_type", self.model_type, T5_MODEL_TYPES)
    validation.check_choice("activation", self.activation, T5_ACTIVATIONS)
    # Half the (per-direction) buckets are exact, the rest logarithmic up
    # to max_distance, which must lie beyond the exact ones.
    validation.check_int("relative_buckets", self.relative_buckets,
                         minimum=4)
    if self.relative_max_distance <= self.relative_buckets // 4:
      validation.fail("relative_max_distance", self.relative_max_distance,
                      f"it must be > relative_buckets // 4 = "
                      f"{self.relative_buckets // 4}")
    validation.check_positive("norm_eps", self.norm_eps)
    for name in ("gated_mlp", "tie_embeddings", "scale_decoder_outputs"):
      if not isinstance(getattr(self, name), bool):
        validation.fail(name, getattr(self, name), "it must be a bool")
    if self.model_type == "mt5" and self.scale_decoder_outputs:
      validation.fail("scale_decoder_outputs", True,
                      "model_type='mt5' has no output scaling")
    for name in ("pad_token_id", "eos_token_id", "decoder_start_token_id"):
      validation.check_int(name, getattr(self, name), minimum=0,
                           maximum=self.vocab_size - 1)

  @property
  def is_encoder_decoder(self) -> bool:
    """Always True: T5 reads a source through its encoder."""
    return True

  @property
  def architecture(self) -> str:
    """The Hugging Face class name, e.g. "T5ForConditionalGeneration"."""
    return _ARCHITECTURES[self.model_type]

  @property
  def feed_forward_proj(self) -> str:
    """HF's spelling of the feed-forward block, e.g. "relu", "gated-gelu"."""
    if not self.gated_mlp:
      return self.activation
    if self.activation == "gelu":
      raise ValueError("activation='gelu' with gated_mlp=True is not "
                       "allowed in a Hugging Face T5 config; 'gated-gelu' "
                       "means activation='gelu_new'.")
    return "gated-gelu" if self.activation == "gelu_new" else (
        f"gated-{self.activation}")

  @classmethod
  def from_hf_config(cls, hf: dict[str, Any]) -> "T5Config":
    """Builds a config from a Hugging Face T5 / mT5 `config.json` dictionary.

    `tie_word_embeddings` (default True) gives `tie_embeddings`; transformers
    5 writes the output scaling separately as `scale_decoder_outputs`.
    Whether a checkpoint's head is tied is finally decided by its tensors
    (see gkdrl/networks/t5_weights.py).

    Raises:
      ValueError: an unknown `model_type` or `feed_forward_proj`.
    """
    model_type = hf.get("model_type")
    validation.check_choice("model_type", model_type, T5_MODEL_TYPES)
    proj = hf.get("feed_forward_proj", "relu" if model_type == "t5"
                  else "gated-gelu")
    parts = proj.split("-")
    if len(parts) > 2 or (len(parts) == 2 and parts[0] != "gated") or (
        parts[-1] not in _HF_ACTIVATIONS):
      validation.fail("feed_forward_proj", proj,
                      "allowed: '<act>' or 'gated-<act>' with <act> one of "
                      + ", ".join(sorted(_HF_ACTIVATIONS)))
    gated = len(parts) == 2
    activation = "gelu_new" if proj == "gated-gelu" else _HF_ACTIVATIONS[
        parts[-1]]
    tie = hf.get("tie_word_embeddings", model_type == "t5")
    scale = model_type == "t5" and hf.get("scale_decoder_outputs", tie)
    return cls(
        model_type=model_type, vocab_size=hf["vocab_size"],
        d_model=hf["d_model"], n_layers=hf["num_layers"],
        n_decoder_layers=hf.get("num_decoder_layers") or hf["num_layers"],
        n_heads=hf["num_heads"], head_dim=hf["d_kv"], d_ff=hf["d_ff"],
        activation=activation, gated_mlp=gated,
        relative_buckets=hf.get("relative_attention_num_buckets", 32),
        relative_max_distance=hf.get("relative_attention_max_distance", 128),
        norm_eps=hf.get("layer_norm_epsilon", 1e-6), tie_embeddings=tie,
        scale_decoder_outputs=scale,
        pad_token_id=_first(hf.get("pad_token_id"), 0),
        eos_token_id=_first(hf.get("eos_token_id"), 1),
        decoder_start_token_id=_first(hf.get("decoder_start_token_id"),
                                      _first(hf.get("pad_token_id"), 0)))

  def to_hf_config(self) -> dict[str, Any]:
    """The Hugging Face `config.json` dictionary of this model."""
    return dict(
        architectures=[self.architecture], model_type=self.model_type,
        is_encoder_decoder=True, vocab_size=self.vocab_size,
        d_model=self.d_model, num_layers=self.n_layers,
        num_decoder_layers=self.n_decoder_layers, num_heads=self.n_heads,
        d_kv=self.head_dim, d_ff=self.d_ff,
        feed_forward_proj=self.feed_forward_proj,
        relative_attention_num_buckets=self.relative_buckets,
        relative_attention_max_distance=self.relative_max_distance,
        layer_norm_epsilon=self.norm_eps,
        tie_word_embeddings=self.tie_embeddings,
        scale_decoder_outputs=self.scale_decoder_outputs,
        pad_token_id=self.pad_token_id, eos_token_id=self.eos_token_id,
        decoder_start_token_id=self.decoder_start_token_id)


def _first(value, default):
  """HF allows a list of ids (several EOS tokens); we keep the first."""
  if isinstance(value, (list, tuple)):
    value = value[0] if value else None
  return default if value is None else value
