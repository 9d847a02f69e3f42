"""Configuration of the decoder-only language models.

One `ModelConfig` describes every supported family through switches:

  family  norm   positions  MLP              attention
  gpt2    layer  learned    plain, gelu_new  MHA, every projection biased
  llama   rms    rope       gated (SwiGLU)   GQA, optional biases
  qwen2   rms    rope       gated (SwiGLU)   GQA, q/k/v biased

SmolLM2 is a Llama. `from_hf_config` / `to_hf_config` convert to and from a
Hugging Face `config.json` dictionary.
"""

import dataclasses
from typing import Any

from gkdrl import validation

MODEL_TYPES = ("gpt2", "llama", "qwen2")
NORMS = ("layer", "rms")
ACTIVATIONS = ("gelu_new", "gelu", "relu", "silu")
POSITIONS = ("learned", "rope")

# HF `hidden_act` / `activation_function` spellings that we implement.
_HF_ACTIVATIONS = {
    "gelu_new": "gelu_new",
    "gelu_pytorch_tanh": "gelu_new",
    "gelu_fast": "gelu_new",
    "gelu": "gelu",
    "relu": "relu",
    "silu": "silu",
    "swish": "silu",
}
_ARCHITECTURES = {
    "gpt2": "GPT2LMHeadModel",
    "llama": "LlamaForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelConfig:
  """Shape and switches of a decoder-only transformer.

  Attributes:
    model_type: Hugging Face family, one of "gpt2", "llama", "qwen2"; decides
      the weight names used when loading and saving.
    vocab_size: V, number of token ids.
    d_model: D, residual stream width.
    n_layers: number of transformer blocks.
    n_heads: number of query heads.
    n_kv_heads: number of key/value heads (grouped-query attention); must
      divide `n_heads`. None means `n_heads`.
    head_dim: width of one head. None means `d_model // n_heads`.
    d_ff: hidden width of the MLP.
    max_positions: size of the learned position table; for rotary models only
      recorded (the HF `max_position_embeddings`).
    norm: "layer" (LayerNorm with bias) or "rms" (RMSNorm, scale only).
    norm_eps: epsilon added to the variance in every norm.
    activation: MLP non-linearity: "gelu_new" (tanh approximation), "gelu"
      (exact), "relu" or "silu".
    gated_mlp: SwiGLU-style `down(act(gate(x)) * up(x))` when True, otherwise
      `down(act(up(x)))`.
    position: "learned" absolute embeddings or "rope" rotary embeddings.
    rope_theta: rotary base frequency.
    qkv_bias: whether the query/key/value projections have biases.
    out_bias: whether the attention output projection has a bias.
    mlp_bias: whether the MLP projections have biases.
    tie_embeddings: whether the unembedding is the transposed token embedding.
    bos_token_id: beginning-of-sequence id, or None.
    eos_token_id: end-of-sequence id, or None.
    pad_token_id: padding id, or None.
  """

  model_type: str = "llama"
  vocab_size: int
  d_model: int
  n_layers: int
  n_heads: int
  n_kv_heads: int | None = None
  head_dim: int | None = None
  d_ff: int
  max_positions: int = 2048
  norm: str = "rms"
  norm_eps: float = 1e-5
  activation: str = "silu"
  gated_mlp: bool = True
  position: str = "rope"
  rope_theta: float = 10000.0
  qkv_bias: bool = False
  out_bias: bool = False
  mlp_bias: bool = False
  tie_embeddings: bool = True
  bos_token_id: int | None = None
  eos_token_id: int | None = None
  pad_token_id: int | None = None

  def __post_init__(self):
    for name in ("vocab_size", "d_model", "n_layers", "n_heads", "d_ff",
                 "max_positions"):
      validation.check_int(name, getattr(self, name), 1)
    if self.n_kv_heads is None:
      object.__setattr__(self, "n_kv_heads", self.n_heads)
    if self.head_dim is None:
      if self.d_model % self.n_heads:
        raise ValueError(
            f"d_model={self.d_model} is not divisible by n_heads="
            f"{self.n_heads}; give head_dim explicitly.")
      object.__setattr__(self, "head_dim", self.d_model // self.n_heads)
    validation.check_int("n_kv_heads", self.n_kv_heads, 1)
    validation.check_int("head_dim", self.head_dim, 1)
    if self.n_heads % self.n_kv_heads:
      raise ValueError(
          f"n_kv_heads={self.n_kv_heads} must divide n_heads={self.n_heads}.")
    for name, allowed in (("model_type", MODEL_TYPES), ("norm", NORMS),
                          ("activation", ACTIVATIONS),
                          ("position", POSITIONS)):
      if getattr(self, name) not in allowed:
        raise ValueError(
            f"{name}={getattr(self, name)!r} is not one of {allowed}.")
    if self.position == "rope" and self.head_dim % 2:
      raise ValueError(
          f"head_dim={self.head_dim} must be even for rotary embeddings.")
    if not self.norm_eps > 0:
      raise ValueError(f"norm_eps={self.norm_eps} must be > 0.")
    if not self.rope_theta > 0:
      raise ValueError(f"rope_theta={self.rope_theta} must be > 0.")
    for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
      value = getattr(self, name)
      if value is not None and not 0 <= value < self.vocab_size:
        raise ValueError(
            f"{name}={value} must be None or in [0, {self.vocab_size}).")

  @property
  def is_encoder_decoder(self) -> bool:
    """Always False: a decoder-only model reads one token sequence."""
    return False

  @property
  def architecture(self) -> str:
    """The Hugging Face class name, e.g. "LlamaForCausalLM"."""
    return _ARCHITECTURES[self.model_type]

  @classmethod
  def from_hf_config(cls, hf: dict[str, Any]) -> "ModelConfig":
    """Builds a config from a Hugging Face `config.json` dictionary.

    Args:
      hf: the parsed `config.json`.

    Returns:
      The equivalent `ModelConfig`.

    Raises:
      ValueError: for an unknown `model_type` or an option we do not
        implement (rope scaling, sliding windows, ...).
    """
    model_type = hf.get("model_type")
    if model_type not in MODEL_TYPES:
      raise ValueError(
          f"Unsupported model_type={model_type!r} (architectures="
          f"{hf.get('architectures')}); supported: {MODEL_TYPES}.")
    ids = dict(bos_token_id=_first(hf.get("bos_token_id")),
               eos_token_id=_first(hf.get("eos_token_id")),
               pad_token_id=_first(hf.get("pad_token_id")))
    if model_type == "gpt2":
      for key in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn",
                  "add_cross_attention"):
        if hf.get(key, False):
          raise ValueError(f"Unsupported GPT-2 option {key}={hf[key]}.")
      if not hf.get("scale_attn_weights", True):
        raise ValueError("Unsupported GPT-2 option scale_attn_weights=False.")
      d_model = hf.get("n_embd", 768)
      return cls(
          model_type="gpt2", vocab_size=hf.get("vocab_size", 50257),
          d_model=d_model, n_layers=hf.get("n_layer", 12),
          n_heads=hf.get("n_head", 12),
          d_ff=hf.get("n_inner") or 4 * d_model,
          max_positions=hf.get("n_positions", 1024), norm="layer",
          norm_eps=hf.get("layer_norm_epsilon", 1e-5),
          activation=_hf_activation(hf.get("activation_function", "gelu_new")),
          gated_mlp=False, position="learned", qkv_bias=True, out_bias=True,
          mlp_bias=True, tie_embeddings=hf.get("tie_word_embeddings", True),
          **ids)
    rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type != "default":
      raise ValueError(f"Unsupported rope scaling {rope!r}; only the default "
                       "(unscaled) rotary embedding is implemented.")
    if hf.get("use_sliding_window", False):
      raise ValueError("Unsupported option use_sliding_window=True.")
    if hf.get("pretraining_tp", 1) != 1:
      raise ValueError(f"Unsupported pretraining_tp={hf['pretraining_tp']}.")
    n_heads = hf["num_attention_heads"]
    attention_bias = hf.get("attention_bias", False)
    return cls(
        model_type=model_type, vocab_size=hf["vocab_size"],
        d_model=hf["hidden_size"], n_layers=hf["num_hidden_layers"],
        n_heads=n_heads, n_kv_heads=hf.get("num_key_value_heads") or n_heads,
        head_dim=hf.get("head_dim") or hf["hidden_size"] // n_heads,
        d_ff=hf["intermediate_size"],
        max_positions=hf.get("max_position_embeddings", 2048), norm="rms",
        norm_eps=hf.get("rms_norm_eps", 1e-6),
        activation=_hf_activation(hf.get("hidden_act", "silu")),
        gated_mlp=True, position="rope",
        rope_theta=rope.get("rope_theta", hf.get("rope_theta", 10000.0)),
        qkv_bias=model_type == "qwen2" or attention_bias,
        out_bias=model_type == "llama" and attention_bias,
        mlp_bias=model_type == "llama" and hf.get("mlp_bias", False),
        # LlamaConfig and Qwen2Config both default to untied embeddings.
        tie_embeddings=hf.get("tie_word_embeddings", False), **ids)

  def to_hf_config(self) -> dict[str, Any]:
    """The Hugging Face `config.json` dictionary of this model.

    Raises:
      ValueError: when the switches do not form a model that the Hugging Face
        class of `model_type` can represent.
    """
    self._check_family()
    ids = dict(bos_token_id=self.bos_token_id, eos_token_id=self.eos_token_id,
               pad_token_id=self.pad_token_id)
    common = dict(architectures=[self.architecture],
                  model_type=self.model_type, vocab_size=self.vocab_size,
                  tie_word_embeddings=self.tie_embeddings, **ids)
    if self.model_type == "gpt2":
      return dict(
          common, n_embd=self.d_model, n_layer=self.n_layers,
          n_head=self.n_heads, n_inner=self.d_ff,
          n_positions=self.max_positions, layer_norm_epsilon=self.norm_eps,
          activation_function=self.activation)
    hf = dict(
        common, hidden_size=self.d_model, num_hidden_layers=self.n_layers,
        num_attention_heads=self.n_heads, num_key_value_heads=self.n_kv_heads,
        head_dim=self.head_dim, intermediate_size=self.d_ff,
        max_position_embeddings=self.max_positions,
        rms_norm_eps=self.norm_eps, hidden_act=self.activation,
        rope_theta=self.rope_theta,
        rope_parameters=dict(rope_type="default", rope_theta=self.rope_theta))
    if self.model_type == "llama":
      hf.update(attention_bias=self.qkv_bias, mlp_bias=self.mlp_bias)
    return hf

  def _check_family(self):
    """Raises ValueError unless the switches match `model_type`'s family."""
    if self.model_type == "gpt2":
      required = dict(norm="layer", gated_mlp=False, position="learned",
                      qkv_bias=True, out_bias=True, mlp_bias=True,
                      n_kv_heads=self.n_heads, head_dim=self.d_model //
                      self.n_heads)
    else:
      required = dict(norm="rms", gated_mlp=True, position="rope")
      if self.model_type == "qwen2":
        required.update(qkv_bias=True, out_bias=False, mlp_bias=False)
      else:
        required.update(out_bias=self.qkv_bias)
    for name, value in required.items():
      if getattr(self, name) != value:
        raise ValueError(
            f"model_type={self.model_type!r} requires {name}={value!r}, got "
            f"{getattr(self, name)!r}.")


def _first(value):
  """HF allows a list of ids (several EOS tokens); we keep the first."""
  if isinstance(value, (list, tuple)):
    return value[0] if value else None
  return value


def _hf_activation(name: str) -> str:
  if name not in _HF_ACTIVATIONS:
    raise ValueError(f"Unsupported activation {name!r}; supported: "
                     f"{sorted(_HF_ACTIVATIONS)}.")
  return _HF_ACTIVATIONS[name]
