"""`--reward=<directory>`: a reward model chosen by the checkpoint's config."""

import json

import jax
import numpy as np
import pytest

from gkdrl import reward_models
from gkdrl.reward_models import preference_training
from gkdrl.runners import setup
from gkdrl.runners import train
from gkdrl.runners import train_reward
from tests.runners.runners_test import values


@pytest.fixture(scope="module")
def preference_dir(model_dirs, facts, tmp_path_factory):
  """A one-label preference model on the student's backbone (facts
  tokenizer), with a random score head."""
  task, _ = facts
  model = preference_training.init_from_causal_lm(
      model_dirs[1], jax.random.key(3), head_scale=1.0)
  path = tmp_path_factory.mktemp("preference")
  preference_training.save_preference_model(model, path,
                                            tokenizer=task.tokenizer)
  return str(path)


def test_preference_directory_is_a_device_reward(preference_dir, facts):
  task, _ = facts
  assert reward_models.directory_kind(preference_dir) == "preference"
  reward = setup.make_reward(preference_dir, task)
  assert not reward.on_host  # same tokenizer as the policy: no re-encoding


def test_train_runs_with_a_preference_directory(model_dirs, preference_dir,
                                                tmp_path):
  workdir = tmp_path / "run"
  train.run(values(model_dirs, workdir, reward=preference_dir, steps=2,
                   save_every=2, eval_examples=4),
            progress=False)
  records = [json.loads(line) for line in
             (workdir / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in records] == [1, 2]
  rewards = [r["reward/mean"] for r in records]
  assert all(np.isfinite(rewards)) and any(r != 0.0 for r in rewards)


def test_directory_without_config_is_a_clear_error(tmp_path, facts):
  task, _ = facts
  with pytest.raises(ValueError, match=r"--reward='.*' is not allowed; a "
                     r"local Hugging Face checkpoint directory with a "
                     r"config.json"):
    setup.make_reward(str(tmp_path), task)


def test_classifier_without_entailment_label_is_a_clear_error(tmp_path,
                                                               facts):
  task, _ = facts
  (tmp_path / "config.json").write_text(json.dumps(
      {"model_type": "bert", "id2label": {"0": "neg", "1": "pos"}}))
  with pytest.raises(ValueError, match=r"an NLI classifier with an "
                     r"'entailment' label or a T5 judge; it has "
                     r"model_type='bert' and labels \['neg', 'pos'\]"):
    setup.make_reward(str(tmp_path), task)


def test_missing_directory_is_a_clear_error(tmp_path, facts):
  task, _ = facts
  with pytest.raises(FileNotFoundError, match="--reward=.*no such directory"):
    setup.make_reward(str(tmp_path / "absent"), task)


def test_entailment_model_must_be_nli_or_t5(preference_dir, facts):
  task, _ = facts
  with pytest.raises(ValueError, match=r"it holds a preference model; "
                     r"allowed here: entailment, t5_judge"):
    setup.make_reward("entailment", task, entailment_model=preference_dir)


def test_same_tokenizer_tells_vocabularies_apart(facts):
  task, _ = facts
  from gkdrl import tasks  # pylint: disable=g-import-not-at-top
  other = tasks.make_word_tokenizer(["alpha", "beta"])
  assert reward_models.directories.same_tokenizer(task.tokenizer,
                                                  task.tokenizer)
  assert not reward_models.directories.same_tokenizer(task.tokenizer, other)


def test_preference_directory_with_another_tokenizer_runs_on_host(
    model_dirs, facts, tmp_path):
  task, _ = facts
  from gkdrl import tasks  # pylint: disable=g-import-not-at-top
  model = preference_training.init_from_causal_lm(
      model_dirs[1], jax.random.key(4), head_scale=1.0)
  words = sorted(set(task.tokenizer.get_vocab()) - {"<pad>", "<s>", "</s>",
                                                    "<unk>"})
  other = tasks.make_word_tokenizer(words[:-1])
  preference_training.save_preference_model(model, tmp_path, tokenizer=other)
  reward = setup.make_reward(str(tmp_path), task)
  assert reward.on_host
  scores = reward.score(reward.init(), reward_models.RewardInputs(
      sources=["a b", "c"], completions=["d", "e f"]))
  assert scores.shape == (2,) and np.all(np.isfinite(scores))


def test_train_reward_output_is_the_reward_of_a_gkd_rl_run(model_dirs, facts,
                                                           tmp_path):
  # The whole learned-reward path: train_reward on the built-in pairs from
  # the student's backbone, then train --agent=gkd_rl --reward=<its dir>.
  task, _ = facts
  train_reward.run(train_reward.TrainRewardConfig(
      base_model=model_dirs[1], num_pairs=24, steps=2, batch_size=4,
      eval_every=2, save_every=2, log_every=1, workdir=str(tmp_path / "rm")))
  reward_dir = str(tmp_path / "rm" / "reward_model")
  assert not setup.make_reward(reward_dir, task).on_host
  workdir = tmp_path / "run"
  train.run(values(model_dirs, workdir, agent="gkd_rl", reward=reward_dir,
                   steps=2, save_every=2, eval_examples=4), progress=False)
  records = [json.loads(line) for line in
             (workdir / "metrics.jsonl").read_text().splitlines()]
  rewards = [r["reward/mean"] for r in records]
  assert [r["step"] for r in records] == [1, 2]
  assert all(np.isfinite(rewards)) and any(r != 0.0 for r in rewards)
