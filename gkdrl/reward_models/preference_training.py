"""Training a preference reward model with the Bradley-Terry loss.

The building blocks of a reward-model trainer, for a `preference` model on a
decoder backbone (shapes: B preference pairs, L tokens):

  loss = mean_b -log sigmoid(r(chosen_b) - r(rejected_b) - margin)

(Bradley & Terry 1952; the RLHF reward-model loss of Ouyang et al. 2022,
https://arxiv.org/abs/2203.02155, Eq. 1; the margin as in Llama 2, Touvron
et al. 2023, https://arxiv.org/abs/2307.09288, Eq. 2).

    model = init_from_causal_lm(lm_dir, key)        # backbone + zero head
    optimizer = optax.adamw(1e-4)
    update = make_preference_update(model, optimizer)
    params, opt_state = model.params, optimizer.init(model.params)
    params, opt_state, metrics = update(params, opt_state, pairs)
    save_preference_model(model._replace(params=params), out_dir, tokenizer)

`save_preference_model` writes a directory that
`transformers.AutoModelForSequenceClassification` loads with the same scores
and `preference.load_preference_model` loads back.
"""

from collections.abc import Sequence
import dataclasses
import json
import pathlib
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import safetensors.numpy

from gkdrl import networks
from gkdrl import validation
from gkdrl.networks import hf_weights
from gkdrl.networks import model as model_lib
from gkdrl.reward_models import preference

_CLASSIFIERS = {"gpt2": "GPT2ForSequenceClassification",
                "llama": "LlamaForSequenceClassification",
                "qwen2": "Qwen2ForSequenceClassification"}


class PreferencePairs(NamedTuple):
  """B preference pairs as token arrays (any padding side)."""

  chosen_tokens: jax.Array  # [B, L] int32
  chosen_mask: jax.Array  # [B, L] bool
  rejected_tokens: jax.Array  # [B, L] int32
  rejected_mask: jax.Array  # [B, L] bool


def encode_pairs(
    tokenizer, prompts: Sequence[str], chosen: Sequence[str],
    rejected: Sequence[str], *, max_length: int, pad_id: int = 0,
    min_bucket: int = 16,
) -> PreferencePairs:
  """Tokenizes B pairs into right-padded arrays of one bucketed length.

  Each side reads `preference.join_text(prompt, response)`; a text longer
  than `max_length` tokens keeps its last `max_length` (the reward is read at
  the end). Both sides share one length L, the longest row rounded up to a
  power of two (at least `min_bucket`, at most `max_length`).

  Args:
    tokenizer: a transformers tokenizer.
    prompts: B prompts.
    chosen: B preferred responses.
    rejected: B other responses.
    max_length: tokens kept per text, >= 1.
    pad_id: the padding id.
    min_bucket: the shortest padded length.

  Returns:
    `PreferencePairs` of [B, L] NumPy arrays.
  """
  validation.check_int("max_length", max_length, minimum=1)
  sides = []
  for responses in (chosen, rejected):
    texts = [preference.join_text(p, r) for p, r in zip(prompts, responses)]
    sides.append([x[-max_length:] or [pad_id]
                  for x in tokenizer(texts)["input_ids"]])
  longest = max(len(x) for side in sides for x in side)
  length = min(max(min_bucket, 1 << (longest - 1).bit_length()), max_length)
  arrays = []
  for side in sides:
    tokens = np.full((len(side), length), pad_id, np.int32)  # [B, L]
    mask = np.zeros((len(side), length), bool)  # [B, L]
    for i, ids in enumerate(side):
      tokens[i, :len(ids)], mask[i, :len(ids)] = ids, True
    arrays += [tokens, mask]
  return PreferencePairs(*arrays)


def bradley_terry_loss(
    chosen_rewards: jax.Array, rejected_rewards: jax.Array,
    margin: float | jax.Array = 0.0,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The mean Bradley-Terry negative log-likelihood of B pairs.

  Args:
    chosen_rewards: [B] rewards of the preferred sequences.
    rejected_rewards: [B] rewards of the others.
    margin: scalar or [B], how far the chosen reward should lead.

  Returns:
    `(loss, metrics)`: the scalar loss and `loss/bradley_terry`,
    `reward/accuracy` (the fraction with r_chosen > r_rejected),
    `reward/margin` (mean r_chosen - r_rejected).
  """
  chex.assert_rank([chosen_rewards, rejected_rewards], 1)
  chex.assert_equal_shape([chosen_rewards, rejected_rewards])
  validation.check_finite("margin", margin)
  diff = (chosen_rewards.astype(jnp.float32)
          - rejected_rewards.astype(jnp.float32))  # [B]
  loss = -jnp.mean(jax.nn.log_sigmoid(diff - margin))
  return loss, {"loss/bradley_terry": loss,
                "reward/accuracy": jnp.mean(diff > 0),
                "reward/margin": jnp.mean(diff)}


def _as_scorer(config: networks.ModelConfig) -> networks.ModelConfig:
  return dataclasses.replace(config, tie_embeddings=True)


def init_from_causal_lm(
    path: str, key: jax.Array, *, head_scale: float = 0.0
) -> preference.PreferenceModel:
  """A preference model whose backbone is a causal LM's decoder.

  Args:
    path: local HF directory or GGUF file of a causal LM.
    key: PRNG key of the score head.
    head_scale: std of the head's N(0, head_scale^2) weights; 0 (default)
      starts every reward at 0.

  Returns:
    The `PreferenceModel` (the LM's unembedding is dropped).
  """
  validation.check_non_negative("head_scale", head_scale)
  lm, params = networks.from_pretrained(path)
  config = _as_scorer(lm.config)
  backbone = {k: v for k, v in params.items() if k != model_lib.UNEMBED}
  head = head_scale * jax.random.normal(key, (config.d_model,), jnp.float32)
  return preference.PreferenceModel(
      config, {"backbone": backbone, preference.HEAD: {"w": head}},
      networks.make_model(config))


def pair_loss(model: preference.PreferenceModel, params,
              pairs: PreferencePairs, margin: float = 0.0):
  """`bradley_terry_loss` of the model's rewards on `pairs` (one forward)."""
  chex.assert_equal_shape([pairs.chosen_tokens, pairs.rejected_tokens])
  tokens = jnp.concatenate([pairs.chosen_tokens, pairs.rejected_tokens])
  mask = jnp.concatenate([pairs.chosen_mask, pairs.rejected_mask])
  rewards = preference.sequence_rewards(model, params, tokens, mask)  # [2B]
  chosen, rejected = jnp.split(rewards, 2)
  return bradley_terry_loss(chosen, rejected, margin)


def make_preference_update(model: preference.PreferenceModel,
                           optimizer: optax.GradientTransformation, *,
                           margin: float = 0.0):
  """A jitted `update(params, opt_state, pairs) -> (params, opt_state,
  metrics)` step of the Bradley-Terry loss."""
  validation.check_finite("margin", margin)

  @jax.jit
  def update(params, opt_state, pairs: PreferencePairs):
    grad_fn = jax.value_and_grad(
        lambda p: pair_loss(model, p, pairs, margin), has_aux=True)
    (_, metrics), grads = grad_fn(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    metrics["grad/norm"] = optax.global_norm(grads)
    return optax.apply_updates(params, updates), opt_state, metrics

  return update


def save_preference_model(model: preference.PreferenceModel, out_dir: str,
                          tokenizer: Any = None) -> pathlib.Path:
  """Writes a one-label `*ForSequenceClassification` HF directory.

  Args:
    model: the model, its params the ones to save.
    out_dir: the directory (created if needed).
    tokenizer: optional transformers tokenizer saved beside the weights.

  Returns:
    The directory.
  """
  config = model.config
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  hf = config.to_hf_config()
  hf.update(architectures=[_CLASSIFIERS[config.model_type]],
            id2label={"0": "LABEL_0"}, label2id={"LABEL_0": 0},
            tie_word_embeddings=False)
  (out / "config.json").write_text(json.dumps(hf, indent=2, sort_keys=True))
  tensors = hf_weights.to_hf_tensors(config, model.params["backbone"])
  tensors["score.weight"] = np.asarray(
      model.params[preference.HEAD]["w"], np.float32)[None]  # [1, D]
  safetensors.numpy.save_file(tensors, str(out / "model.safetensors"),
                              metadata={"format": "pt"})
  if tokenizer is not None:
    tokenizer.save_pretrained(str(out))
  return out
