"""A reward model from a local Hugging Face directory, chosen by config.json.

    kind = directory_kind(path)   # "preference", "entailment" or "t5_judge"
    reward = make_directory_reward(path, policy_tokenizer=task.tokenizer)

* "t5_judge": a T5 / mT5 checkpoint (`model_type` t5 or mt5, or
  `is_encoder_decoder`): `t5_judge.T5JudgeReward` (TRUE-style "1"/"0").
* "preference": a `*ForSequenceClassification` head with one label
  (`id2label` of size 1, or `num_labels: 1`): `preference`'s learned reward.
  It runs on device from the policy's own tokens when the directory's
  tokenizer has the policy tokenizer's vocabulary and special tokens, on the
  host (decoded text, re-tokenized) otherwise.
* "entailment": a classifier with an "entailment" label in `id2label`:
  `entailment.EntailmentReward`.
"""

import json
import pathlib
from typing import Callable

import jax

from gkdrl import networks
from gkdrl import validation
from gkdrl.reward_models import base
from gkdrl.reward_models import entailment
from gkdrl.reward_models import preference
from gkdrl.reward_models import t5_judge

KINDS = ("preference", "entailment", "t5_judge")
_T5_TYPES = ("t5", "mt5")


def directory_kind(path: str | pathlib.Path, flag: str = "path") -> str:
  """Which reward a local checkpoint directory is (one of KINDS).

  Args:
    path: the directory.
    flag: its name in error messages (e.g. "--reward").

  Raises:
    ValueError: not a directory with a config.json, or a checkpoint that is
      none of KINDS.
  """
  path = pathlib.Path(path)
  config_file = path / "config.json"
  if not config_file.is_file():
    validation.fail(flag, str(path), "a local Hugging Face checkpoint "
                    "directory with a config.json")
  hf = json.loads(config_file.read_text())
  if hf.get("model_type") in _T5_TYPES or hf.get("is_encoder_decoder"):
    return "t5_judge"
  labels = [str(v).strip().lower() for v in (hf.get("id2label") or {})
            .values()]
  if hf.get("num_labels") == 1 or len(labels) == 1:
    return "preference"
  if entailment.ENTAILMENT_LABEL in labels:
    return "entailment"
  validation.fail(
      flag, str(path),
      f"its config.json must describe a one-label sequence classifier "
      f"(preference reward), an NLI classifier with an 'entailment' label or "
      f"a T5 judge; it has model_type={hf.get('model_type')!r} and labels "
      f"{labels}")


def same_tokenizer(a, b) -> bool:
  """Whether two transformers tokenizers give the same ids to the same text
  pieces (`networks.tokenizer_difference`: vocabulary and EOS, BOS and UNK
  ids; the pad id never reaches the score, which reads the mask)."""
  return networks.tokenizer_difference(a, b) is None


def make_directory_reward(
    path: str | pathlib.Path, *, policy_tokenizer=None, flag: str = "path",
    kinds: tuple[str, ...] = KINDS, mesh: jax.sharding.Mesh | None = None,
    format_prompt: Callable[[str], str] | None = None,
) -> base.RewardModel:
  """The reward model of a local checkpoint directory.

  Args:
    path: the directory.
    policy_tokenizer: the policy's tokenizer; a preference model with the
      same tokenizer scores the policy's tokens on device.
    flag: the directory's name in error messages.
    kinds: the kinds accepted here.
    mesh: the training mesh: the model's forward runs on it
      (`placement`); None: one device.
    format_prompt: the task's `source -> prompt`, which a preference model
      scoring text reads before the completion (its training pairs hold
      rendered prompts); entailment and T5 judges read the source itself.

  Returns:
    The `RewardModel` (`on_host=False` for a preference model on device).
  """
  kind = directory_kind(path, flag)
  if kind not in kinds:
    validation.fail(flag, str(path), f"it holds a {kind} model; allowed "
                    f"here: {', '.join(kinds)}")
  if kind == "t5_judge":
    return t5_judge.T5JudgeReward(path, mesh=mesh).reward_model()
  if kind == "entailment":
    return entailment.EntailmentReward(path, mesh=mesh).reward_model()
  on_host = True
  if policy_tokenizer is not None:
    try:
      own = networks.load_tokenizer(path)
    except (OSError, ValueError):
      own = None
    on_host = own is None or not same_tokenizer(own, policy_tokenizer)
  return preference.make_preference_reward(path, on_host=on_host, mesh=mesh,
                                          format_prompt=format_prompt)
