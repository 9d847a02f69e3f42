"""Factuality reward: the entailment probability of an NLI cross-encoder.

reward(source, completion) = P(entailment | premise=source,
hypothesis=completion) from a Hugging Face sequence-classification checkpoint
trained on MNLI/SNLI/FEVER/ANLI (BERT, RoBERTa or DeBERTa-v2/v3, picked from
config.json's `model_type` by `classifiers.load_sequence_classifier`), run by
our Haiku models. This is the
textual-entailment reward of the GKD paper's factuality experiments (Agarwal
et al. 2024, Sec. 4.1 "RL fine-tuning with a factual consistency reward",
https://arxiv.org/abs/2306.13649).

Pipeline per batch: tokenize (premise, hypothesis) pairs on the host with the
checkpoint's own tokenizer, sort them by length, pad each micro-batch to a
bucketed shape (rows and length rounded up to powers of two), and run one
jitted forward per bucket, so a run compiles a handful of times.

Empty completions (empty or whitespace only) are not sent to the model: they
score `EntailmentConfig.empty_score` (0.0 by default), because an NLI model's
output on an empty hypothesis is arbitrary and rewarding it would teach the
policy to say nothing.

`granularity` chooses how a (source, summary) row becomes NLI pairs:
"document" (one pair, the default), "sentence" (each summary sentence
against the source, mean) or "summac" (SummaC-ZS, Laban et al. 2022,
https://arxiv.org/abs/2111.09525: each summary sentence against each source
chunk, max over chunks, mean over sentences; for sources longer than the
model's input). `document_scoring` documents each mode's cost in NLI pairs.
`sentence_level=True` is the older spelling of `granularity="summac"`.
"""

from collections.abc import Sequence
import dataclasses
import pathlib
import warnings

import jax
import numpy as np

from gkdrl import validation
from gkdrl.reward_models import base
from gkdrl.reward_models import classifiers
from gkdrl.reward_models import document_scoring
from gkdrl.reward_models import encoder_weights
from gkdrl.reward_models import placement
from gkdrl.reward_models import sentences as sentences_lib

ENTAILMENT_LABEL = "entailment"
CONTRADICTION_LABEL = "contradiction"


@dataclasses.dataclass(frozen=True, kw_only=True)
class EntailmentConfig:
  """Options of `EntailmentReward`.

  Attributes:
    name: metric name of the reward model.
    max_length: cap on tokens per (premise, hypothesis) pair, >= 8; None
      means the model's limit (position table and tokenizer). Longer pairs
      are truncated longest-first.
    batch_size: pairs per jitted forward pass, >= 1.
    min_bucket: smallest padded length, >= 1; lengths are rounded up to
      powers of two from here.
    granularity: "document" (source vs completion, 1 NLI pair per row),
      "sentence" (each completion sentence vs the source, S pairs, mean) or
      "summac" (each completion sentence vs each source chunk, S * C pairs,
      max over chunks, mean over sentences); see `document_scoring`.
    sentence_level: deprecated; True means `granularity="summac"`.
    chunk_tokens: tokens per source chunk in "summac" mode, >= 1 (whole
      sentences are packed up to it); None means half of the pair limit.
    chunk_sentences: source sentences per chunk in "summac" mode, >= 1;
      replaces the token budget when set (do not set both).
    nli_score: "entailment" (P(entailment), in [0, 1]) or
      "entailment_minus_contradiction" (P(e) - P(c), in [-1, 1], SummaC-ZS's
      default score; needs a "contradiction" label).
    empty_score: reward of an empty completion, finite.
  """

  name: str = "entailment"
  max_length: int | None = None
  batch_size: int = 32
  min_bucket: int = 16
  granularity: str = "document"
  sentence_level: bool = False
  chunk_tokens: int | None = None
  chunk_sentences: int | None = None
  nli_score: str = "entailment"
  empty_score: float = 0.0

  def __post_init__(self):
    if not isinstance(self.name, str) or not self.name:
      raise ValueError(f"name={self.name!r} must be a non-empty string.")
    if self.max_length is not None and self.max_length < 8:
      raise ValueError(f"max_length={self.max_length} must be None or >= 8.")
    if self.batch_size < 1:
      raise ValueError(f"batch_size={self.batch_size} must be >= 1.")
    if self.min_bucket < 1:
      raise ValueError(f"min_bucket={self.min_bucket} must be >= 1.")
    if self.chunk_tokens is not None and self.chunk_tokens < 1:
      raise ValueError(
          f"chunk_tokens={self.chunk_tokens} must be None or >= 1."
      )
    if not np.isfinite(self.empty_score):
      raise ValueError(f"empty_score={self.empty_score} must be finite.")
    validation.check_choice("granularity", self.granularity,
                            document_scoring.GRANULARITIES)
    validation.check_choice("nli_score", self.nli_score,
                            document_scoring.NLI_SCORES)
    if self.chunk_sentences is not None:
      validation.check_int("chunk_sentences", self.chunk_sentences, 1)
      if self.chunk_tokens is not None:
        validation.fail("chunk_sentences", self.chunk_sentences,
                        "set chunk_sentences or chunk_tokens, not both")
    if self.sentence_level:
      if self.granularity not in ("document", "summac"):
        validation.fail("sentence_level", self.sentence_level,
                        f"it means granularity='summac', which disagrees "
                        f"with granularity={self.granularity!r}")
      warnings.warn("EntailmentConfig(sentence_level=True) is deprecated; "
                    "use granularity='summac'.", DeprecationWarning,
                    stacklevel=3)
      object.__setattr__(self, "granularity", "summac")


def entailment_index(id2label: dict, where: str = "config.json",
                     label: str = ENTAILMENT_LABEL) -> int:
  """The class index whose label is `label` (case-insensitive).

  Args:
    id2label: config.json's `id2label`.
    where: the file, for error messages.
    label: the label to find (e.g. `CONTRADICTION_LABEL`).

  Returns:
    Its index.
  """
  labels = {int(k): str(v) for k, v in (id2label or {}).items()}
  if sorted(labels) != list(range(len(labels))) or len(labels) < 2:
    raise ValueError(
        f"{where}: id2label={labels} must map 0..C-1 (C >= 2) to labels."
    )
  hits = [i for i, v in labels.items()
          if v.strip().lower() == label]
  if len(hits) != 1:
    raise ValueError(
        f"{where}: expected exactly one {label!r} label "
        f"(case-insensitive) in id2label; found labels "
        f"{[labels[i] for i in sorted(labels)]}."
    )
  return hits[0]


def _bucket(n: int, minimum: int, maximum: int) -> int:
  return min(max(minimum, 1 << max(n - 1, 0).bit_length()), maximum)


class EntailmentReward:
  """An NLI cross-encoder checkpoint as a host reward model.

  Attributes:
    config: the `EntailmentConfig`.
    classifier: the loaded `classifiers.SequenceClassifier`.
    encoder_config: the model's config (`EncoderConfig` or
      `DebertaConfig`, with its head).
    labels: class labels in index order, from config.json `id2label`.
    entailment_index: index of the entailment class.
    contradiction_index: index of the contradiction class, or None when
      `nli_score="entailment"`.
    tokenizer: the checkpoint's transformers tokenizer.
    max_length: tokens per pair actually used.
    mesh: this process's part of the training mesh, or None.
    forward: the jitted `(params, ids, mask, type_ids) -> [n, C]` logits
      of one padded bucket (`placement.make_forward`).
  """

  on_host = True

  def __init__(
      self, path: str | pathlib.Path, config: EntailmentConfig | None = None,
      *, mesh: jax.sharding.Mesh | None = None,
  ):
    """Loads config, labels, tokenizer and weights from a local directory.

    Args:
      path: HF directory of a BERT/RoBERTa/DeBERTa-v2/v3
        `*ForSequenceClassification` checkpoint with safetensors weights
        and tokenizer files (a DeBERTa-v3 directory with `spm.model` but no
        `tokenizer.json` needs `pip install sentencepiece` to build its
        tokenizer).
      config: options; defaults to `EntailmentConfig()`.
      mesh: the training mesh: the forward then runs on this process's
        devices of it (`placement`), parameters placed by the training
        rules and rows split over the batch axes; None: one device.

    Raises:
      ValueError: no entailment label (naming the labels found), an
        unsupported architecture, or weights that do not fit the config.
      FileNotFoundError: missing files (or only pytorch_model.bin).
    """
    import transformers  # pylint: disable=g-import-not-at-top

    self.config = config or EntailmentConfig()
    path = pathlib.Path(path)
    hf_config = encoder_weights.read_config(path)
    self.entailment_index = entailment_index(
        hf_config.get("id2label"), f"{path}/config.json"
    )
    self.contradiction_index = None
    if self.config.nli_score == "entailment_minus_contradiction":
      self.contradiction_index = entailment_index(
          hf_config.get("id2label"), f"{path}/config.json",
          CONTRADICTION_LABEL)
    self.labels = [hf_config["id2label"][k]
                   for k in sorted(hf_config["id2label"], key=int)]
    self.classifier = classifiers.load_sequence_classifier(
        path, num_labels=len(self.labels))
    self.encoder_config = self.classifier.config
    self._params = self.classifier.params
    self.tokenizer = transformers.AutoTokenizer.from_pretrained(
        str(path), local_files_only=True)
    if len(self.tokenizer) > self.classifier.vocab_size:
      raise ValueError(
          f"{path}: the tokenizer has {len(self.tokenizer)} tokens but the "
          f"model's vocab_size is {self.classifier.vocab_size}."
      )
    limits = [self.classifier.max_tokens, self.config.max_length,
              getattr(self.tokenizer, "model_max_length", None)]
    self.max_length = min(int(x) for x in limits if x is not None)
    self.mesh = placement.host_mesh(mesh)
    self.forward = placement.make_forward(self.classifier.apply, self.mesh)

  @property
  def name(self) -> str:
    return self.config.name

  def init(self, key=None):
    """The loaded parameters (on the mesh, if any); `key` is unused."""
    del key
    self._params = placement.place_params(self._params, self.mesh)
    return self._params

  def _encode(self, premises, hypotheses):
    enc = self.tokenizer(
        list(premises), list(hypotheses), truncation="longest_first",
        max_length=self.max_length, padding=False)
    ids = enc["input_ids"]
    types = enc.get("token_type_ids")
    if types is None or not self.classifier.uses_token_types:
      types = [[0] * len(x) for x in ids]
    return ids, types

  def logits(
      self, params, premises: Sequence[str], hypotheses: Sequence[str]
  ) -> np.ndarray:
    """Classifier logits of (premise, hypothesis) pairs.

    Args:
      params: from `init`.
      premises: N strings.
      hypotheses: N strings.

    Returns:
      [N, C] float32 logits, classes in `labels` order.
    """
    if len(premises) != len(hypotheses):
      raise ValueError(
          f"premises has {len(premises)} entries but hypotheses has "
          f"{len(hypotheses)}; they must match."
      )
    num = len(premises)
    out = np.zeros((num, len(self.labels)), np.float32)  # [N, C]
    if not num:
      return out
    ids, types = self._encode(premises, hypotheses)
    lengths = np.array([len(x) for x in ids])
    order = np.argsort(lengths, kind="stable")
    # Pad with the config pad id: RoBERTa positions are defined by it.
    cfg, pad = self.config, self.classifier.pad_token_id
    for start in range(0, num, cfg.batch_size):
      rows = order[start:start + cfg.batch_size]
      length = _bucket(int(lengths[rows].max()), cfg.min_bucket,
                       self.max_length)
      n = placement.padded_rows(_bucket(len(rows), 1, cfg.batch_size),
                                self.mesh)
      input_ids = np.full((n, length), pad, np.int32)  # [n, L]
      mask = np.zeros((n, length), np.int32)  # [n, L]
      type_ids = np.zeros((n, length), np.int32)  # [n, L]
      for j, r in enumerate(rows):
        input_ids[j, :lengths[r]] = ids[r]
        mask[j, :lengths[r]] = 1
        type_ids[j, :lengths[r]] = types[r]
      logits = self.forward(params, input_ids, mask, type_ids)  # [n, C]
      out[rows] = np.asarray(logits)[:len(rows)]
    return out

  def probabilities(self, params, premises, hypotheses) -> np.ndarray:
    """[N, C] float32 class probabilities (softmax of `logits`)."""
    logits = self.logits(params, premises, hypotheses).astype(np.float64)
    logits -= logits.max(axis=-1, keepdims=True)
    probs = np.exp(logits)
    return (probs / probs.sum(axis=-1, keepdims=True)).astype(np.float32)

  def _count_tokens(self, texts: Sequence[str]) -> list[int]:
    enc = self.tokenizer(list(texts), add_special_tokens=False)
    return [len(x) for x in enc["input_ids"]]

  def _chunks(self, source: str) -> list[str]:
    if self.config.chunk_sentences:
      return document_scoring.chunk_by_sentences(
          source, self.config.chunk_sentences)
    chunk_tokens = self.config.chunk_tokens or max(1, self.max_length // 2)
    return sentences_lib.chunk_document(source, self._count_tokens,
                                        chunk_tokens)

  def pair_scores(self, params, premises, hypotheses) -> np.ndarray:
    """[N] float32 `nli_score` of (premise, hypothesis) pairs."""
    probs = self.probabilities(params, premises, hypotheses)  # [N, C]
    scores = probs[:, self.entailment_index]
    if self.contradiction_index is not None:
      scores = scores - probs[:, self.contradiction_index]
    return scores

  def score(self, params, inputs: base.RewardInputs) -> np.ndarray:
    """Entailment rewards of a batch.

    Args:
      params: from `init`.
      inputs: needs `sources` (premises) and `completions` (hypotheses).

    Returns:
      [B] float32 rewards in [0, 1] ([-1, 1] with
      `nli_score="entailment_minus_contradiction"`), or `empty_score` for
      empty completions.
    """
    batch_size = base.check_inputs(
        inputs, required=["sources", "completions"], model=self.name)
    sources, completions = list(inputs.sources), list(inputs.completions)
    rewards = np.full((batch_size,), self.config.empty_score, np.float32)
    rows = [i for i, c in enumerate(completions) if c.strip()]
    if rows:
      srcs = [sources[i] for i in rows]
      comps = [completions[i] for i in rows]
      rewards[rows] = document_scoring.document_scores(
          lambda p, h: self.pair_scores(params, p, h), srcs, comps,
          granularity=self.config.granularity, chunker=self._chunks)
    return base.check_rewards(rewards, batch_size, self.name)

  def reward_model(self) -> base.RewardModel:
    """This model as a `RewardModel` NamedTuple (`on_host=True`)."""
    return base.RewardModel(name=self.name, on_host=True, init=self.init,
                            score=self.score)


def make_entailment_reward(
    path: str | pathlib.Path, *, mesh: jax.sharding.Mesh | None = None,
    **options
) -> base.RewardModel:
  """`EntailmentReward(path, EntailmentConfig(**options), mesh=mesh)
  .reward_model()`."""
  return EntailmentReward(path, EntailmentConfig(**options),
                          mesh=mesh).reward_model()
