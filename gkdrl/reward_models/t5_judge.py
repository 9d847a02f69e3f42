"""Seq2seq yes/no judge reward: a T5 NLI model read the TRUE way.

TRUE (Honovich et al. 2022, "TRUE: Re-evaluating Factual Consistency
Evaluation", https://arxiv.org/abs/2204.04991) fine-tunes T5 to answer "1"
(entailed) or "0" (not entailed) to the text

    premise: {premise} hypothesis: {hypothesis}

The reward is the first decoder step's probability of the positive label,
normalised over the two label tokens:

    reward = softmax([logit(yes), logit(no)])[0]

with logits from one decoder step fed `decoder_start_token_id`. Any T5
checkpoint fine-tuned to answer with one of two single-token labels works
the same way (e.g. labels "yes"/"no" and a question template).

Pairs are tokenized on the host, sorted by length, padded to power-of-two
buckets (rows and length) and scored by one jitted forward per bucket, as in
`EntailmentReward`; `granularity` ("document", "sentence", "summac") and
`empty_score` mean what they mean there (see `document_scoring`).
"""

from collections.abc import Sequence
import dataclasses
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from gkdrl import networks
from gkdrl import validation
from gkdrl.reward_models import base
from gkdrl.reward_models import document_scoring
from gkdrl.reward_models import placement
from gkdrl.reward_models import sentences as sentences_lib

TRUE_TEMPLATE = "premise: {premise} hypothesis: {hypothesis}"


@dataclasses.dataclass(frozen=True, kw_only=True)
class T5JudgeConfig:
  """Options of `T5JudgeReward`.

  Attributes:
    name: metric name of the reward model.
    template: the judge's input text, with `{premise}` and `{hypothesis}`.
    positive_label: the answer whose probability is the reward; it must be
      one token of the checkpoint's tokenizer.
    negative_label: the other answer, one token.
    max_length: tokens per rendered pair (longer inputs are cut at the end),
      >= 8.
    batch_size: pairs per jitted forward pass, >= 1.
    min_bucket: smallest padded length, >= 1.
    granularity: "document", "sentence" or "summac" (see `document_scoring`).
    chunk_tokens: tokens per source chunk in "summac" mode; None means half
      of `max_length`.
    chunk_sentences: source sentences per chunk in "summac" mode (do not set
      both).
    empty_score: reward of an empty completion, finite.
  """

  name: str = "t5_judge"
  template: str = TRUE_TEMPLATE
  positive_label: str = "1"
  negative_label: str = "0"
  max_length: int = 512
  batch_size: int = 32
  min_bucket: int = 16
  granularity: str = "document"
  chunk_tokens: int | None = None
  chunk_sentences: int | None = None
  empty_score: float = 0.0

  def __post_init__(self):
    if not isinstance(self.name, str) or not self.name:
      validation.fail("name", self.name, "it must be a non-empty str")
    for field in ("{premise}", "{hypothesis}"):
      if not isinstance(self.template, str) or field not in self.template:
        validation.fail("template", self.template,
                        "it must contain {premise} and {hypothesis}")
    for name in ("positive_label", "negative_label"):
      value = getattr(self, name)
      if not isinstance(value, str) or not value.strip():
        validation.fail(name, value, "it must be a non-empty str")
    if self.positive_label == self.negative_label:
      validation.fail("negative_label", self.negative_label,
                      "it must differ from positive_label")
    validation.check_int("max_length", self.max_length, 8)
    validation.check_int("batch_size", self.batch_size, 1)
    validation.check_int("min_bucket", self.min_bucket, 1)
    validation.check_choice("granularity", self.granularity,
                            document_scoring.GRANULARITIES)
    if self.chunk_tokens is not None:
      validation.check_int("chunk_tokens", self.chunk_tokens, 1)
    if self.chunk_sentences is not None:
      validation.check_int("chunk_sentences", self.chunk_sentences, 1)
      if self.chunk_tokens is not None:
        validation.fail("chunk_sentences", self.chunk_sentences,
                        "set chunk_sentences or chunk_tokens, not both")
    if not np.isfinite(self.empty_score):
      validation.fail("empty_score", self.empty_score, "it must be finite")


def label_token_id(tokenizer, label: str, where: str) -> int:
  """The one token id `tokenizer` writes for `label` (else a ValueError)."""
  ids = tokenizer(label, add_special_tokens=False)["input_ids"]
  if len(ids) != 1:
    pieces = tokenizer.convert_ids_to_tokens(ids)
    validation.fail(f"{where} label", label,
                    f"it must be a single token of the tokenizer; it is "
                    f"{len(ids)} tokens {pieces}")
  return int(ids[0])


def _bucket(n: int, minimum: int, maximum: int) -> int:
  return min(max(minimum, 1 << max(n - 1, 0).bit_length()), maximum)


def _make_score_fn(model, start_id: int, label_ids: tuple[int, int],
                   mesh: jax.sharding.Mesh | None = None):
  """Jitted `(params, ids [N, L], mask [N, L]) -> [N]` P(positive), on
  `mesh` if given (`placement.make_forward`)."""

  def score(params, ids, mask):
    enc = model.encode(params, ids, mask)  # [N, L, D]
    start = jnp.full((ids.shape[0], 1), start_id, jnp.int32)  # [N, 1]
    hidden = model.decoder_hidden(params, enc, mask, start)  # [N, 1, D]
    heads = model.unembedding(params)[:, jnp.array(label_ids)]  # [D, 2]
    logits = jnp.einsum("nd,dk->nk", hidden[:, 0], heads,
                        preferred_element_type=jnp.float32)  # [N, 2]
    return jax.nn.softmax(logits, axis=-1)[:, 0]

  return placement.make_forward(score, mesh)


class T5JudgeReward:
  """A T5 yes/no judge (TRUE NLI by default) as a host reward model.

  Attributes:
    config: the `T5JudgeConfig`.
    model: the `networks.EncoderDecoderModel`.
    tokenizer: the checkpoint's transformers tokenizer.
    label_ids: (positive, negative) token ids.
    mesh: this process's part of the training mesh, or None.
    forward: the jitted `(params, ids, mask) -> [n]` P(positive) of one
      padded bucket (`placement.make_forward`).
  """

  on_host = True

  def __init__(self, path: str | pathlib.Path,
               config: T5JudgeConfig | None = None, *,
               mesh: jax.sharding.Mesh | None = None):
    """Loads a local T5 directory (config.json, safetensors, tokenizer).

    `mesh` (the training mesh, or None for one device) runs the forward on
    this process's devices of it, as `placement` describes.

    Raises:
      ValueError: not an encoder-decoder checkpoint, or a label that is not
        one token.
    """
    self.config = config or T5JudgeConfig()
    path = pathlib.Path(path)
    self.model, self._params = networks.from_pretrained(path)
    if not getattr(self.model, "is_encoder_decoder", False):
      validation.fail("path", str(path),
                      "a T5 judge needs an encoder-decoder (T5) checkpoint")
    self.tokenizer = networks.load_tokenizer(path)
    self.label_ids = (
        label_token_id(self.tokenizer, self.config.positive_label,
                       "positive"),
        label_token_id(self.tokenizer, self.config.negative_label,
                       "negative"))
    t5 = self.model.config
    self.pad_token_id = t5.pad_token_id
    self.mesh = placement.host_mesh(mesh)
    self.forward = _make_score_fn(self.model, t5.decoder_start_token_id,
                                  self.label_ids, self.mesh)

  @property
  def name(self) -> str:
    return self.config.name

  def init(self, key=None):
    """The loaded parameters (on the mesh, if any); `key` is unused."""
    del key
    self._params = placement.place_params(self._params, self.mesh)
    return self._params

  def render(self, premises: Sequence[str],
             hypotheses: Sequence[str]) -> list[str]:
    """The judge's input texts."""
    return [self.config.template.format(premise=p, hypothesis=h)
            for p, h in zip(premises, hypotheses)]

  def pair_scores(self, params, premises: Sequence[str],
                  hypotheses: Sequence[str]) -> np.ndarray:
    """[N] float32 P(positive) of (premise, hypothesis) pairs."""
    if len(premises) != len(hypotheses):
      validation.fail("hypotheses", f"{len(hypotheses)} entries",
                      f"as many as premises ({len(premises)})")
    num, cfg = len(premises), self.config
    out = np.zeros((num,), np.float32)
    if not num:
      return out
    ids = self.tokenizer(self.render(premises, hypotheses), truncation=True,
                         max_length=cfg.max_length)["input_ids"]
    lengths = np.array([len(x) for x in ids])
    order = np.argsort(lengths, kind="stable")
    for start in range(0, num, cfg.batch_size):
      rows = order[start:start + cfg.batch_size]
      length = _bucket(int(lengths[rows].max()), cfg.min_bucket,
                       max(cfg.max_length, cfg.min_bucket))
      n = placement.padded_rows(_bucket(len(rows), 1, cfg.batch_size),
                                self.mesh)
      input_ids = np.full((n, length), self.pad_token_id, np.int32)  # [n, L]
      mask = np.zeros((n, length), bool)  # [n, L]
      mask[len(rows):, 0] = True  # filler rows attend to one pad token
      for j, r in enumerate(rows):
        input_ids[j, :lengths[r]] = ids[r]
        mask[j, :lengths[r]] = True
      out[rows] = np.asarray(self.forward(params, input_ids, mask))[:len(rows)]
    return out

  def _chunks(self, source: str) -> list[str]:
    if self.config.chunk_sentences:
      return document_scoring.chunk_by_sentences(
          source, self.config.chunk_sentences)
    budget = self.config.chunk_tokens or max(1, self.config.max_length // 2)
    count = lambda texts: [len(x) for x in self.tokenizer(
        list(texts), add_special_tokens=False)["input_ids"]]
    return sentences_lib.chunk_document(source, count, budget)

  def score(self, params, inputs: base.RewardInputs) -> np.ndarray:
    """[B] float32 judge rewards in [0, 1] (`empty_score` when empty).

    Args:
      params: from `init`.
      inputs: needs `sources` (premises) and `completions` (hypotheses).
    """
    batch_size = base.check_inputs(
        inputs, required=["sources", "completions"], model=self.name)
    sources, completions = list(inputs.sources), list(inputs.completions)
    rewards = np.full((batch_size,), self.config.empty_score, np.float32)
    rows = [i for i, c in enumerate(completions) if c.strip()]
    if rows:
      rewards[rows] = document_scoring.document_scores(
          lambda p, h: self.pair_scores(params, p, h),
          [sources[i] for i in rows], [completions[i] for i in rows],
          granularity=self.config.granularity, chunker=self._chunks)
    return base.check_rewards(rewards, batch_size, self.name)

  def reward_model(self) -> base.RewardModel:
    """This model as a `RewardModel` NamedTuple (`on_host=True`)."""
    return base.RewardModel(name=self.name, on_host=True, init=self.init,
                            score=self.score)


def make_t5_judge_reward(path: str | pathlib.Path, *,
                         mesh: jax.sharding.Mesh | None = None,
                         **options) -> base.RewardModel:
  """`T5JudgeReward(path, T5JudgeConfig(**options), mesh=mesh)
  .reward_model()`."""
  return T5JudgeReward(path, T5JudgeConfig(**options),
                       mesh=mesh).reward_model()
