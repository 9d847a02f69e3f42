"""A Haiku BERT / RoBERTa encoder with the HF sequence-classification heads.

Shapes: N rows (premise/hypothesis pairs or sentences), L padded length,
D hidden size, H heads, C classes.

The encoder is the post-LayerNorm transformer of BERT (Devlin et al. 2019,
https://arxiv.org/abs/1810.04805) and RoBERTa (Liu et al. 2019,
https://arxiv.org/abs/1907.11692):

  embeddings  LN(word + position + token_type)
  each layer  h = LN(h + Attn(h));  h = LN(h + W2 act(W1 h))

BERT numbers positions 0..L-1. RoBERTa (fairseq) numbers real tokens from
`pad_token_id + 1` and gives pad tokens the position `pad_token_id`, exactly
as `RobertaEmbeddings.create_position_ids_from_input_ids` does.

Heads, matching Hugging Face:
  BertForSequenceClassification     classifier(tanh(pooler(h[:, 0])))
  RobertaForSequenceClassification  out_proj(tanh(dense(h[:, 0])))
"""

import dataclasses
from typing import Any

import chex
import haiku as hk
import jax
import jax.numpy as jnp

FAMILIES = ("bert", "roberta")
ACTIVATIONS = ("gelu", "gelu_new", "relu", "silu")
# HF `hidden_act` spellings we implement, mapped to `ACTIVATIONS`.
HF_ACTIVATIONS = {
    "gelu": "gelu",
    "gelu_new": "gelu_new",
    "gelu_pytorch_tanh": "gelu_new",
    "gelu_fast": "gelu_new",
    "relu": "relu",
    "silu": "silu",
    "swish": "silu",
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class EncoderConfig:
  """Shape and switches of a BERT-family encoder.

  Attributes:
    family: "bert" (positions 0..L-1, pooler head) or "roberta" (positions
      offset by `pad_token_id + 1`, dense/out_proj head).
    vocab_size: number of token ids.
    hidden_size: D.
    num_layers: number of transformer layers.
    num_heads: H; must divide `hidden_size`.
    intermediate_size: hidden width of the feed-forward block.
    max_position_embeddings: rows of the position table.
    type_vocab_size: rows of the token-type (segment) table, >= 1.
    layer_norm_eps: epsilon of every LayerNorm.
    activation: one of `ACTIVATIONS`; "gelu" is exact (erf), "gelu_new" the
      tanh approximation.
    pad_token_id: id of the padding token (sets RoBERTa's position offset).
    num_labels: C for the classification head; 0 for an encoder alone.
  """

  family: str = "bert"
  vocab_size: int
  hidden_size: int
  num_layers: int
  num_heads: int
  intermediate_size: int
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  layer_norm_eps: float = 1e-12
  activation: str = "gelu"
  pad_token_id: int = 0
  num_labels: int = 0

  def __post_init__(self):
    if self.family not in FAMILIES:
      raise ValueError(f"family={self.family!r} must be one of {FAMILIES}.")
    if self.activation not in ACTIVATIONS:
      raise ValueError(
          f"activation={self.activation!r} must be one of {ACTIVATIONS}."
      )
    for field in ("vocab_size", "hidden_size", "num_layers", "num_heads",
                  "intermediate_size", "max_position_embeddings",
                  "type_vocab_size"):
      value = getattr(self, field)
      if not isinstance(value, int) or value < 1:
        raise ValueError(f"{field}={value!r} must be an int >= 1.")
    if self.hidden_size % self.num_heads:
      raise ValueError(
          f"num_heads={self.num_heads} must divide hidden_size="
          f"{self.hidden_size}."
      )
    if not 0 <= self.pad_token_id < self.vocab_size:
      raise ValueError(
          f"pad_token_id={self.pad_token_id} must be in [0, vocab_size="
          f"{self.vocab_size})."
      )
    if self.num_labels < 0:
      raise ValueError(f"num_labels={self.num_labels} must be >= 0.")
    if not self.layer_norm_eps > 0:
      raise ValueError(f"layer_norm_eps={self.layer_norm_eps} must be > 0.")

  @property
  def max_tokens(self) -> int:
    """The longest input the position table allows."""
    if self.family == "roberta":
      return self.max_position_embeddings - self.pad_token_id - 1
    return self.max_position_embeddings


def _activation(name: str):
  return {
      "gelu": lambda x: jax.nn.gelu(x, approximate=False),
      "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
      "relu": jax.nn.relu,
      "silu": jax.nn.silu,
  }[name]


def _layer_norm(config: EncoderConfig, name: str) -> hk.LayerNorm:
  return hk.LayerNorm(axis=-1, create_scale=True, create_offset=True,
                      eps=config.layer_norm_eps, name=name)


def position_ids(config: EncoderConfig, input_ids: jax.Array) -> jax.Array:
  """[N, L] int32 position of every token (see the module docstring)."""
  if config.family == "roberta":
    real = (input_ids != config.pad_token_id).astype(jnp.int32)  # [N, L]
    return jnp.cumsum(real, axis=1) * real + config.pad_token_id
  return jnp.broadcast_to(
      jnp.arange(input_ids.shape[1], dtype=jnp.int32), input_ids.shape
  )


class _Layer(hk.Module):
  """One post-LN transformer layer."""

  def __init__(self, config: EncoderConfig, name: str):
    super().__init__(name=name)
    self._config = config

  def __call__(self, h: jax.Array, mask: jax.Array) -> jax.Array:
    cfg = self._config
    n, length, d = h.shape
    head = d // cfg.num_heads
    split = lambda x: x.reshape(n, length, cfg.num_heads, head)
    q = split(hk.Linear(d, name="query")(h))  # [N, L, H, D/H]
    k = split(hk.Linear(d, name="key")(h))  # [N, L, H, D/H]
    v = split(hk.Linear(d, name="value")(h))  # [N, L, H, D/H]
    logits = jnp.einsum("nqhc,nkhc->nhqk", q, k) / jnp.sqrt(
        jnp.float32(head))  # [N, H, L, L]
    # A row with no valid key (a padding row) gets a uniform softmax, not
    # NaN, because every logit becomes the same finite minimum.
    logits = jnp.where(mask[:, None, None, :], logits.astype(jnp.float32),
                       jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    attn = jnp.einsum("nhqk,nkhc->nqhc", weights, v).reshape(n, length, d)
    h = _layer_norm(cfg, "attention_layer_norm")(
        h + hk.Linear(d, name="attention_output")(attn))  # [N, L, D]
    ff = _activation(cfg.activation)(
        hk.Linear(cfg.intermediate_size, name="intermediate")(h))
    return _layer_norm(cfg, "output_layer_norm")(
        h + hk.Linear(d, name="output")(ff))  # [N, L, D]


class Encoder(hk.Module):
  """Token ids to contextual hidden states `[N, L, D]`."""

  def __init__(self, config: EncoderConfig, name: str = "encoder"):
    super().__init__(name=name)
    self._config = config

  def __call__(
      self,
      input_ids: jax.Array,
      attention_mask: jax.Array,
      token_type_ids: jax.Array | None = None,
  ) -> jax.Array:
    """Encodes a batch.

    Args:
      input_ids: [N, L] int32 token ids, right-padded with `pad_token_id`.
      attention_mask: [N, L] bool or {0, 1}, 1 on real tokens.
      token_type_ids: [N, L] int32 segment ids, or None for all zeros.

    Returns:
      [N, L, D] float32 last hidden states (padding positions hold values
      that no valid position attends to).
    """
    cfg = self._config
    chex.assert_rank([input_ids, attention_mask], 2)
    chex.assert_equal_shape([input_ids, attention_mask])
    if token_type_ids is None:
      token_type_ids = jnp.zeros_like(input_ids)
    chex.assert_equal_shape([input_ids, token_type_ids])
    embed = lambda size, name: hk.Embed(size, cfg.hidden_size, name=name)
    h = (embed(cfg.vocab_size, "word_embeddings")(input_ids)
         + embed(cfg.max_position_embeddings, "position_embeddings")(
             position_ids(cfg, input_ids))
         + embed(cfg.type_vocab_size, "token_type_embeddings")(
             token_type_ids))  # [N, L, D]
    h = _layer_norm(cfg, "embeddings_layer_norm")(h)
    mask = attention_mask.astype(bool)  # [N, L]
    for i in range(cfg.num_layers):
      h = _Layer(cfg, name=f"layer_{i}")(h, mask)
    return h


def classifier_head(config: EncoderConfig, hidden: jax.Array) -> jax.Array:
  """The HF sequence-classification head on the first token.

  Args:
    config: the encoder's config; `num_labels` must be >= 1.
    hidden: [N, L, D] encoder output.

  Returns:
    [N, C] float32 logits.
  """
  if config.num_labels < 1:
    raise ValueError(
        f"num_labels={config.num_labels}: a classifier needs >= 1 label."
    )
  first = hidden[:, 0]  # [N, D]
  with hk.name_scope("classifier"):
    if config.family == "bert":
      pooled = jnp.tanh(hk.Linear(config.hidden_size, name="pooler")(first))
      return hk.Linear(config.num_labels, name="out")(pooled)
    x = jnp.tanh(hk.Linear(config.hidden_size, name="dense")(first))
    return hk.Linear(config.num_labels, name="out_proj")(x)


def make_encoder(config: EncoderConfig) -> hk.Transformed:
  """The encoder alone.

  Args:
    config: its config (`num_labels` is ignored).

  Returns:
    `apply(params, input_ids, attention_mask, token_type_ids=None)` returning
    the [N, L, D] last hidden states (no RNG needed).
  """

  def forward(input_ids, attention_mask, token_type_ids=None):
    return Encoder(config)(input_ids, attention_mask, token_type_ids)

  return hk.without_apply_rng(hk.transform(forward))


def make_sequence_classifier(config: EncoderConfig) -> hk.Transformed:
  """The encoder with its sequence-classification head.

  Args:
    config: its config; `num_labels` must be >= 1.

  Returns:
    `apply(params, input_ids, attention_mask, token_type_ids=None)` returning
    [N, C] float32 logits (no RNG needed).
  """
  if config.num_labels < 1:
    raise ValueError(
        f"num_labels={config.num_labels}: a classifier needs >= 1 label."
    )

  def forward(input_ids, attention_mask, token_type_ids=None):
    hidden = Encoder(config)(input_ids, attention_mask, token_type_ids)
    return classifier_head(config, hidden).astype(jnp.float32)

  return hk.without_apply_rng(hk.transform(forward))


def param_shapes(config: EncoderConfig, *, with_head: bool) -> Any:
  """The parameter tree (of ShapeDtypeStructs) the model expects."""
  make = make_sequence_classifier if with_head else make_encoder
  ids = jnp.zeros((1, 2), jnp.int32)
  return jax.eval_shape(
      lambda k: make(config).init(k, ids, ids), jax.random.key(0)
  )
