"""Learned preference reward models: a decoder backbone and a scalar head.

A Hugging Face `LlamaForSequenceClassification`,
`Qwen2ForSequenceClassification` or `GPT2ForSequenceClassification`
checkpoint with `num_labels=1` (the reward models of RLHF, Ouyang et al.
2022, https://arxiv.org/abs/2203.02155, trained with a Bradley-Terry loss on
preference pairs) scores a sequence by

  r(x) = score . h_last(x)

where h_last is the final-normed hidden state of the last real token and
`score` the head's [D] weights (no bias). The backbone is `gkdrl.networks`'
decoder, so any family it loads works.

Shapes: B rows, L tokens (any mix of left and right padding), D width.

The last real token is found from the attention mask, where Hugging Face
takes the rightmost token that differs from `pad_token_id`; the two agree
whenever the padding id appears only on masked positions (a checkpoint whose
pad id is also its EOS id is scored correctly here, not there).

Two ways to run it:
* `on_host=False`: from the policy's own `[B, P]` prompt and `[B, T]`
  completion tokens, jittable, when the policy shares the reward model's
  tokenizer (no decode and re-encode);
* `on_host=True` (default): from text, `join_text(prompt, completion)`
  tokenized by the checkpoint's own tokenizer, batched by padded-length
  buckets. The prompt is the task's rendering of the source
  (`format_prompt`), the text `train_reward` pairs its responses with.
"""

import dataclasses
import pathlib
from typing import Any, Callable, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np

from gkdrl import networks
from gkdrl import validation
from gkdrl.networks import hf_weights
from gkdrl.reward_models import base
from gkdrl.reward_models import encoder_weights
from gkdrl.reward_models import placement

HEAD = "score"


class _DictSource:
  """`hf_weights.TensorSource` over tensors already in memory."""

  def __init__(self, tensors: dict[str, np.ndarray], location: str):
    self._tensors, self._location = tensors, location

  def names(self):
    return self._tensors.keys()

  def get(self, name: str) -> np.ndarray:
    return self._tensors[name]

  def where(self, name: str | None = None) -> str:
    del name
    return self._location


class PreferenceModel(NamedTuple):
  """A loaded scalar reward model.

  Attributes:
    config: the backbone's `networks.ModelConfig`.
    params: `{"backbone": decoder params, "score": {"w": [D]}}`.
    backbone: the `networks.LanguageModel` (its `hidden` is used).
  """

  config: networks.ModelConfig
  params: Any
  backbone: networks.LanguageModel


def load_preference_model(path: str | pathlib.Path) -> PreferenceModel:
  """Loads a decoder `*ForSequenceClassification` with one label.

  Args:
    path: local HF directory (config.json + safetensors).

  Returns:
    The `PreferenceModel`.

  Raises:
    ValueError: more than one label, an unsupported backbone, or a missing
      `score.weight`.
  """
  hf = encoder_weights.read_config(path)
  num_labels = hf.get("num_labels", len(hf.get("id2label") or {0: 0}))
  if num_labels != 1:
    validation.fail(f"{path}/config.json num_labels", num_labels,
                    "a reward model has exactly 1 label")
  # The head replaces the unembedding: tie it so no lm_head is looked for.
  config = dataclasses.replace(networks.ModelConfig.from_hf_config(hf),
                               tie_embeddings=True)
  tensors = encoder_weights.read_safetensors(path)
  if f"{HEAD}.weight" not in tensors:
    raise ValueError(f"{path}: no {HEAD}.weight tensor; this is not a "
                     "*ForSequenceClassification checkpoint.")
  head = tensors.pop(f"{HEAD}.weight")  # [1, D]
  if head.shape != (1, config.d_model):
    raise ValueError(f"{path}: {HEAD}.weight has shape {head.shape}; "
                     f"expected (1, {config.d_model}).")
  backbone = hf_weights.load_params(config, _DictSource(tensors, str(path)))
  params = {"backbone": backbone, HEAD: {"w": jnp.asarray(head[0])}}
  return PreferenceModel(config, params, networks.make_model(config))


def sequence_rewards(model: PreferenceModel, params, tokens: jax.Array,
                     mask: jax.Array) -> jax.Array:
  """Rewards of B token sequences (jittable).

  Args:
    model: from `load_preference_model`.
    params: its params (an argument, never closed over).
    tokens: [B, L] int32, padded on either side (or both).
    mask: [B, L] bool, True on real tokens; every row needs one.

  Returns:
    [B] float32 scores at each row's last real token.
  """
  chex.assert_rank([tokens, mask], 2)
  chex.assert_equal_shape([tokens, mask])
  mask = mask.astype(bool)
  hidden = model.backbone.hidden(params["backbone"], tokens, mask)  # [B, L, D]
  index = jnp.arange(tokens.shape[1])
  last = jnp.max(jnp.where(mask, index, 0), axis=1)  # [B]
  h_last = jnp.take_along_axis(hidden, last[:, None, None], axis=1)[:, 0]
  return jnp.einsum("bd,d->b", h_last.astype(jnp.float32),
                    params[HEAD]["w"].astype(jnp.float32))


def join_text(prompt: str, response: str) -> str:
  """The text a preference model reads: prompt, one space, response.

  No space is added when either side already has whitespace at the seam.
  """
  if not prompt or not response or prompt[-1].isspace() or (
      response[0].isspace()):
    return prompt + response
  return f"{prompt} {response}"


def _bucket(n: int, minimum: int) -> int:
  return max(minimum, 1 << max(n - 1, 0).bit_length())


def make_preference_reward(
    path: str | pathlib.Path, *, name: str = "preference",
    on_host: bool = True, batch_size: int = 16, max_length: int = 1024,
    mesh: jax.sharding.Mesh | None = None,
    format_prompt: Callable[[str], str] | None = None,
) -> base.RewardModel:
  """A preference reward model as a `RewardModel`.

  Args:
    path: local HF directory of a one-label decoder classifier (with its
      tokenizer when `on_host`).
    name: metric name.
    on_host: score decoded text (`join_text(format_prompt(source),
      completion)`) with the checkpoint's tokenizer; False scores the
      policy's token arrays
      (`prompt_tokens`/`mask` then `completion_tokens`/`mask`, EOS left
      out as decoded text leaves it out), which needs the policy to use
      the same tokenizer.
    batch_size: rows per jitted forward on the host, >= 1.
    max_length: tokens kept per row on the host (the last ones), >= 1.
    mesh: the training mesh, or None for one device. Parameters are placed
      on it by the training rules (`placement`); on the host each bucket's
      rows are split over its batch axes (this process's devices), on
      device the rewards are split like the policy's rows.

  Returns:
    The `RewardModel`; `init` returns the loaded params (on the mesh).
  """
  validation.check_int("batch_size", batch_size, minimum=1)
  validation.check_int("max_length", max_length, minimum=1)
  model = load_preference_model(path)
  if not on_host:
    init = lambda key=None: placement.place_params(model.params, mesh)
    rows = None if mesh is None else placement.rows_sharding(mesh)
    eos = model.config.eos_token_id

    def score_tokens(params, inputs):
      base.check_inputs(inputs, model=name, required=[
          "prompt_tokens", "prompt_mask", "completion_tokens",
          "completion_mask"])
      tokens = jnp.concatenate(
          [inputs.prompt_tokens, inputs.completion_tokens], axis=1)
      # A finished completion ends with EOS, which decoded text (the host
      # path, and `train_reward`'s pairs) lacks: score where the text ends.
      completion_mask = inputs.completion_mask.astype(bool)
      if eos is not None:
        completion_mask &= inputs.completion_tokens != eos
      mask = jnp.concatenate([inputs.prompt_mask.astype(bool),
                              completion_mask], axis=1)
      rewards = sequence_rewards(model, params, tokens, mask)  # [B]
      if rows is not None and not (
          rewards.shape[0] % placement.row_multiple(mesh)):
        rewards = jax.lax.with_sharding_constraint(rewards, rows)
      return rewards

    return base.RewardModel(name, False, init, score_tokens)

  mesh = placement.host_mesh(mesh)
  forward = placement.make_forward(
      lambda p, t, m: sequence_rewards(model, p, t, m), mesh)
  init = lambda key=None: placement.place_params(model.params, mesh)
  tokenizer = networks.load_tokenizer(path)
  pad = model.config.pad_token_id or 0

  def score_text(params, inputs):
    rows = base.check_inputs(inputs, model=name,
                             required=["sources", "completions"])
    prompts = (inputs.sources if format_prompt is None
               else [format_prompt(s) for s in inputs.sources])
    texts = [join_text(p, c) for p, c in zip(prompts, inputs.completions)]
    ids = [x[-max_length:] for x in tokenizer(texts)["input_ids"]]
    out = np.zeros((rows,), np.float32)
    order = np.argsort([len(x) for x in ids], kind="stable")
    for start in range(0, rows, batch_size):
      chunk = order[start:start + batch_size]
      length = _bucket(max(max(len(ids[r]) for r in chunk), 1), 16)
      n = placement.padded_rows(_bucket(len(chunk), 1), mesh)
      tokens = np.full((n, length), pad, np.int32)  # [n, L] right-padded
      mask = np.zeros((n, length), bool)  # [n, L]
      mask[:, 0] = True  # rows beyond the batch score a lone pad token
      for j, r in enumerate(chunk):
        tokens[j, :len(ids[r])] = ids[r]
        mask[j, :len(ids[r])] = True
      out[chunk] = np.asarray(forward(params, tokens, mask))[:len(chunk)]
    return base.check_rewards(out, rows, name)

  return base.RewardModel(name, True, init, score_text)
