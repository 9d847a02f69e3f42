"""A Haiku DeBERTa-v2 / v3 encoder with the HF sequence-classification head.

Shapes: N rows (premise/hypothesis pairs), L padded length, D hidden size,
E embedding size, H heads, C = D / H head size, S attention span (relative
distances -S..S-1 have their own embedding row), K classes.

DeBERTa (He et al. 2021, https://arxiv.org/abs/2006.03654, Eq. 2-4) scores
query i against key j with disentangled attention:

  A[i, j] = (q_i . k_j  +  q_i . Kr[d(i, j)]  +  k_j . Qr[d(i, j)])
            / sqrt(C * (1 + number of position terms))

where Kr = W_k^r R and Qr = W_q^r R project the relative-position table R
(the "c2p" and "p2c" terms of `pos_att_type`), and d(i, j) = clip(b(i - j)
+ S, 0, 2S - 1) with b the identity, or with `position_buckets` > 0 the
log-bucketing of DeBERTa-v3 (He et al. 2023, https://arxiv.org/abs/2111.09543)
that keeps distances below S/2 exact and compresses longer ones
logarithmically up to `max_relative_positions`. With `share_att_key` the
content projections W_q, W_k also project R.

  embeddings  LN(word [+ position] [+ token_type]) (projected E -> D when
              they differ), zeroed on padding
  each layer  h = LN(h + Attn(h));  h = LN(h + W2 act(W1 h))
  v2 conv     after layer 0: h = mask * LN(h + act(conv1d(embeddings)))
  head        classifier(act(pooler(h[:, 0])))

DeBERTa-v3 checkpoints set `position_biased_input=False` (no absolute
position embeddings), `position_buckets=256`, `norm_rel_ebd="layer_norm"`
and `share_att_key=True`; DeBERTa-v2 checkpoints may add the convolution
(`conv_kernel_size` > 0).
"""

import dataclasses
import functools
from typing import Any

import chex
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from gkdrl import validation

POSITION_TERMS = ("c2p", "p2c")
# HF activation spellings we implement (`hidden_act`, `pooler_hidden_act`,
# `conv_act`), mapped to functions.
ACTIVATIONS = {
    "gelu": functools.partial(jax.nn.gelu, approximate=False),
    "gelu_new": functools.partial(jax.nn.gelu, approximate=True),
    "gelu_pytorch_tanh": functools.partial(jax.nn.gelu, approximate=True),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "tanh": jnp.tanh,
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class DebertaConfig:
  """Shape and switches of a DeBERTa-v2/v3 encoder (HF names where shared).

  Attributes:
    vocab_size: number of token ids.
    hidden_size: D.
    num_layers: number of transformer layers.
    num_heads: H; must divide `hidden_size`.
    intermediate_size: hidden width of the feed-forward block.
    embedding_size: E, width of the embedding tables; None means D.
    max_position_embeddings: rows of the absolute position table (and the
      longest input).
    type_vocab_size: rows of the token-type table; 0 means none (v3).
    layer_norm_eps: epsilon of every LayerNorm.
    hidden_act: activation of the feed-forward block (`ACTIVATIONS`).
    pooler_hidden_act: activation of the pooler.
    pad_token_id: id of the padding token.
    position_biased_input: add absolute position embeddings (False in v3).
    relative_attention: use the disentangled position terms.
    pos_att_type: the position terms, a subset of `POSITION_TERMS`; they
      count in the attention scale even without `relative_attention`, as in
      Hugging Face.
    max_relative_positions: the largest distance told apart; < 1 means
      `max_position_embeddings`.
    position_buckets: S when > 0 (log buckets), else S is
      `max_relative_positions`.
    share_att_key: project positions with the content query/key weights.
    norm_rel_ebd: "layer_norm" to LayerNorm the relative table, or "none".
    conv_kernel_size: width of the v2 convolution after layer 0; 0 for none.
    conv_groups: groups of that convolution.
    conv_act: activation of that convolution.
    num_labels: K for the classification head; 0 for the encoder alone.
  """

  vocab_size: int
  hidden_size: int
  num_layers: int
  num_heads: int
  intermediate_size: int
  embedding_size: int | None = None
  max_position_embeddings: int = 512
  type_vocab_size: int = 0
  layer_norm_eps: float = 1e-7
  hidden_act: str = "gelu"
  pooler_hidden_act: str = "gelu"
  pad_token_id: int = 0
  position_biased_input: bool = True
  relative_attention: bool = False
  pos_att_type: tuple[str, ...] = ()
  max_relative_positions: int = -1
  position_buckets: int = -1
  share_att_key: bool = False
  norm_rel_ebd: str = "none"
  conv_kernel_size: int = 0
  conv_groups: int = 1
  conv_act: str = "tanh"
  num_labels: int = 0

  def __post_init__(self):
    for field in ("vocab_size", "hidden_size", "num_layers", "num_heads",
                  "intermediate_size", "max_position_embeddings"):
      validation.check_int(field, getattr(self, field), minimum=1)
    if self.embedding_size is not None:
      validation.check_int("embedding_size", self.embedding_size, minimum=1)
    validation.check_int("type_vocab_size", self.type_vocab_size, minimum=0)
    validation.check_int("num_labels", self.num_labels, minimum=0)
    validation.check_int("conv_kernel_size", self.conv_kernel_size, 0)
    validation.check_int("conv_groups", self.conv_groups, minimum=1)
    validation.check_int("max_relative_positions",
                         self.max_relative_positions)
    validation.check_int("position_buckets", self.position_buckets)
    validation.check_int("pad_token_id", self.pad_token_id, 0,
                         self.vocab_size - 1)
    validation.check_positive("layer_norm_eps", self.layer_norm_eps)
    if self.hidden_size % self.num_heads:
      validation.fail("num_heads", self.num_heads,
                      f"it must divide hidden_size={self.hidden_size}")
    for field in ("hidden_act", "pooler_hidden_act", "conv_act"):
      validation.check_choice(field, getattr(self, field), ACTIVATIONS)
    validation.check_choice("norm_rel_ebd", self.norm_rel_ebd,
                            ("none", "layer_norm"))
    if not isinstance(self.pos_att_type, tuple) or any(
        t not in POSITION_TERMS for t in self.pos_att_type):
      validation.fail("pos_att_type", self.pos_att_type,
                      f"it must be a tuple of terms from {POSITION_TERMS}")
    if self.conv_kernel_size and self.conv_kernel_size % 2 == 0:
      validation.fail("conv_kernel_size", self.conv_kernel_size,
                      "an odd width keeps the sequence length (or 0)")
    if self.conv_kernel_size and self.hidden_size % self.conv_groups:
      validation.fail("conv_groups", self.conv_groups,
                      f"it must divide hidden_size={self.hidden_size}")

  @property
  def max_tokens(self) -> int:
    """The longest input the model reads (its absolute position table)."""
    return self.max_position_embeddings

  @property
  def span(self) -> int:
    """S: relative distances -S..S-1 have their own embedding row."""
    if self.position_buckets > 0:
      return self.position_buckets
    if self.max_relative_positions > 0:
      return self.max_relative_positions
    return self.max_position_embeddings

  @property
  def max_relative(self) -> int:
    """The largest distance the log buckets tell apart."""
    if self.max_relative_positions > 0:
      return self.max_relative_positions
    return self.max_position_embeddings

  @property
  def scale_factor(self) -> int:
    """1 + the number of position terms (the attention scale's factor)."""
    return 1 + len(set(self.pos_att_type))


def log_bucket_position(
    relative: np.ndarray, bucket_size: int, max_position: int
) -> np.ndarray:
  """DeBERTa-v3 log buckets of relative distances (HF float32 maths).

  Distances with |x| <= bucket_size // 2 are kept; longer ones map to
  sign(x) * (mid + ceil(log(|x| / mid) / log((max_position - 1) / mid)
  * (mid - 1))), mid = bucket_size // 2.

  Args:
    relative: int relative distances, any shape.
    bucket_size: S, the number of buckets on each side.
    max_position: the largest distance told apart.

  Returns:
    int64 bucketed distances, same shape.
  """
  relative = np.asarray(relative, np.int64)
  mid = bucket_size // 2
  sign = np.sign(relative)
  inside = (relative < mid) & (relative > -mid)
  abs_pos = np.where(inside, mid - 1, np.abs(relative)).astype(np.float32)
  ratio = np.log(np.float32((max_position - 1) / mid))
  log_pos = np.ceil(
      np.log(abs_pos / np.float32(mid)) / ratio * np.float32(mid - 1)
  ) + np.float32(mid)
  bucketed = np.where(abs_pos <= mid, relative.astype(np.float32),
                      log_pos * sign)
  return bucketed.astype(np.int64)


def relative_index(config: DebertaConfig, length: int) -> np.ndarray:
  """[L, L] int32 row of the relative table each (query, key) reads."""
  pos = np.arange(length)
  relative = pos[:, None] - pos[None, :]  # [L, L]
  if config.position_buckets > 0:
    relative = log_bucket_position(relative, config.position_buckets,
                                   config.max_relative)
  span = config.span
  return np.clip(relative + span, 0, 2 * span - 1).astype(np.int32)


def _layer_norm(config: DebertaConfig, name: str) -> hk.LayerNorm:
  return hk.LayerNorm(axis=-1, create_scale=True, create_offset=True,
                      eps=config.layer_norm_eps, name=name)


class _Attention(hk.Module):
  """Disentangled self-attention (module docstring)."""

  def __init__(self, config: DebertaConfig, name: str):
    super().__init__(name=name)
    self._config = config

  def __call__(self, h, mask, rel_table):
    cfg = self._config
    n, length, d = h.shape
    heads, size = cfg.num_heads, d // cfg.num_heads
    split = lambda x: x.reshape(x.shape[:-1] + (heads, size))
    query, key = hk.Linear(d, name="query"), hk.Linear(d, name="key")
    q, k = split(query(h)), split(key(h))  # [N, L, H, C]
    v = split(hk.Linear(d, name="value")(h))  # [N, L, H, C]
    scale = jnp.sqrt(jnp.float32(size * cfg.scale_factor))
    logits = jnp.einsum("nqhc,nkhc->nhqk", q, k)  # [N, H, L, L]
    if cfg.relative_attention and cfg.pos_att_type:
      # Only rows lo..hi of the table are reachable at this length (about
      # 2L of the 2S): project and score just those.
      index = relative_index(cfg, length)  # [L, L]
      lo, hi = int(index.min()), int(index.max())
      rows = rel_table[lo:hi + 1]  # [R, D]
      index = jnp.asarray(index - lo)[None, None]  # [1, 1, L, L]
      if "c2p" in cfg.pos_att_type:
        pos_key = key if cfg.share_att_key else hk.Linear(d, name="pos_key")
        kr = split(pos_key(rows))  # [R, H, C]
        c2p = jnp.einsum("nqhc,rhc->nhqr", q, kr)  # [N, H, L, R]
        logits += jnp.take_along_axis(c2p, index, axis=-1)
      if "p2c" in cfg.pos_att_type:
        pos_query = (query if cfg.share_att_key
                     else hk.Linear(d, name="pos_query"))
        qr = split(pos_query(rows))  # [R, H, C]
        p2c = jnp.einsum("nkhc,rhc->nhkr", k, qr)  # [N, H, L, R]
        # p2c[i, j] = k_j . Qr[index[i, j]]: gather along keys' rows.
        logits += jnp.take_along_axis(
            p2c, jnp.swapaxes(index, -1, -2), axis=-1).swapaxes(-1, -2)
    logits = logits.astype(jnp.float32) / scale
    # As in `encoder`: a padding row gets a uniform softmax, not NaN.
    logits = jnp.where(mask[:, None, None, :], logits,
                       jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    attn = jnp.einsum("nhqk,nkhc->nqhc", weights, v).reshape(n, length, d)
    return _layer_norm(cfg, "attention_layer_norm")(
        h + hk.Linear(d, name="attention_output")(attn))  # [N, L, D]


class _Layer(hk.Module):
  """Attention, then the post-LN feed-forward block."""

  def __init__(self, config: DebertaConfig, name: str):
    super().__init__(name=name)
    self._config = config

  def __call__(self, h, mask, rel_table):
    cfg = self._config
    h = _Attention(cfg, name="attention")(h, mask, rel_table)
    ff = ACTIVATIONS[cfg.hidden_act](
        hk.Linear(cfg.intermediate_size, name="intermediate")(h))
    return _layer_norm(cfg, "output_layer_norm")(
        h + hk.Linear(cfg.hidden_size, name="output")(ff))  # [N, L, D]


class _Conv(hk.Module):
  """The v2 convolution over the embeddings, added after layer 0."""

  def __init__(self, config: DebertaConfig, name: str = "conv"):
    super().__init__(name=name)
    self._config = config

  def __call__(self, embedded, h, mask):
    cfg = self._config
    width, groups, d = cfg.conv_kernel_size, cfg.conv_groups, h.shape[-1]
    w = hk.get_parameter("w", (width, d // groups, d), init=jnp.zeros)
    b = hk.get_parameter("b", (d,), init=jnp.zeros)
    out = jax.lax.conv_general_dilated(
        embedded, w, window_strides=(1,), padding=[((width - 1) // 2,) * 2],
        dimension_numbers=("NWC", "WIO", "NWC"),
        feature_group_count=groups) + b  # [N, L, D]
    out = ACTIVATIONS[cfg.conv_act](jnp.where(mask[..., None], out, 0.0))
    out = _layer_norm(cfg, "layer_norm")(h + out)
    return out * mask[..., None].astype(out.dtype)  # [N, L, D]


class Deberta(hk.Module):
  """Token ids to contextual hidden states `[N, L, D]`."""

  def __init__(self, config: DebertaConfig, name: str = "deberta"):
    super().__init__(name=name)
    self._config = config

  def __call__(self, input_ids, attention_mask, token_type_ids=None):
    """Encodes a batch.

    Args:
      input_ids: [N, L] int32 token ids, right-padded.
      attention_mask: [N, L] bool or {0, 1}, 1 on real tokens.
      token_type_ids: [N, L] int32 segment ids, or None for all zeros.

    Returns:
      [N, L, D] float32 last hidden states.
    """
    cfg = self._config
    chex.assert_rank([input_ids, attention_mask], 2)
    chex.assert_equal_shape([input_ids, attention_mask])
    length, width = input_ids.shape[1], cfg.embedding_size or cfg.hidden_size
    if length > cfg.max_tokens:
      raise ValueError(f"Inputs of length {length} exceed the model's "
                       f"{cfg.max_tokens} positions.")
    mask = attention_mask.astype(bool)  # [N, L]
    x = hk.Embed(cfg.vocab_size, width, name="word_embeddings")(input_ids)
    if cfg.position_biased_input:
      x += hk.Embed(cfg.max_position_embeddings, width,
                    name="position_embeddings")(jnp.arange(length))[None]
    if cfg.type_vocab_size:
      if token_type_ids is None:
        token_type_ids = jnp.zeros_like(input_ids)
      chex.assert_equal_shape([input_ids, token_type_ids])
      x += hk.Embed(cfg.type_vocab_size, width,
                    name="token_type_embeddings")(token_type_ids)
    if width != cfg.hidden_size:
      x = hk.Linear(cfg.hidden_size, with_bias=False, name="embed_proj")(x)
    x = _layer_norm(cfg, "embeddings_layer_norm")(x)
    x = x * mask[..., None].astype(x.dtype)  # [N, L, D]
    rel_table = None
    if cfg.relative_attention:
      rel_table = hk.get_parameter(
          "rel_embeddings", (2 * cfg.span, cfg.hidden_size),
          init=hk.initializers.TruncatedNormal(0.02))  # [2S, D]
      if cfg.norm_rel_ebd == "layer_norm":
        rel_table = _layer_norm(cfg, "rel_layer_norm")(rel_table)
    h = x
    for i in range(cfg.num_layers):
      h = _Layer(cfg, name=f"layer_{i}")(h, mask, rel_table)
      if i == 0 and cfg.conv_kernel_size:
        h = _Conv(cfg)(x, h, mask)
    return h


def classifier_head(config: DebertaConfig, hidden: jax.Array) -> jax.Array:
  """ContextPooler and classifier: [N, L, D] -> [N, K] logits."""
  pooled = ACTIVATIONS[config.pooler_hidden_act](
      hk.Linear(config.hidden_size, name="pooler")(hidden[:, 0]))  # [N, D]
  return hk.Linear(config.num_labels, name="classifier")(pooled)


def make_deberta(config: DebertaConfig) -> hk.Transformed:
  """The encoder alone: `apply(params, ids, mask, types=None)` -> [N, L, D]."""

  def forward(input_ids, attention_mask, token_type_ids=None):
    return Deberta(config)(input_ids, attention_mask, token_type_ids)

  return hk.without_apply_rng(hk.transform(forward))


def make_deberta_classifier(config: DebertaConfig) -> hk.Transformed:
  """The encoder with its head: `apply(...)` -> [N, K] float32 logits."""
  if config.num_labels < 1:
    validation.fail("num_labels", config.num_labels,
                    "a classifier needs >= 1 label")

  def forward(input_ids, attention_mask, token_type_ids=None):
    hidden = Deberta(config)(input_ids, attention_mask, token_type_ids)
    return classifier_head(config, hidden).astype(jnp.float32)

  return hk.without_apply_rng(hk.transform(forward))


def param_shapes(config: DebertaConfig, *, with_head: bool) -> Any:
  """The parameter tree (of ShapeDtypeStructs) the model expects."""
  make = make_deberta_classifier if with_head else make_deberta
  ids = jnp.zeros((1, 2), jnp.int32)
  return jax.eval_shape(
      lambda k: make(config).init(k, ids, ids), jax.random.key(0))

