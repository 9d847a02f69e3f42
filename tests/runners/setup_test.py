"""runners.setup: models are refused before any work when they cannot serve
the task (another tokenizer, too few positions)."""

import dataclasses
import json
import logging
import shutil

import jax
import pytest

from gkdrl import evaluation
from gkdrl import networks
from gkdrl import tasks
from gkdrl.runners import setup
from gkdrl.runners import train
from gkdrl.tasks import word_tokenizer
from tests.tiny_models import tiny_config


def _save(path, task, tokenizer, vocab_size=None):
  config = tiny_config(task, 16, 1)
  if vocab_size:
    config = dataclasses.replace(config, vocab_size=vocab_size)
  model = networks.make_model(config)
  return str(networks.save_pretrained(model, model.init(jax.random.key(0)),
                                      path, tokenizer=tokenizer))


def _load(task, teacher, student):
  return setup.load_models(task=task, task_name="facts", task_kwargs={},
                           teacher=teacher, student=student, progress=False)


def test_a_model_with_another_tokenizer_is_refused(facts, model_dirs,
                                                   tmp_path):
  task, _ = facts
  # A larger vocabulary than the task's, so the old size check passed it.
  other = tasks.make_task("arithmetic", seed=0).tokenizer
  path = _save(tmp_path / "other", task, other, vocab_size=256)
  with pytest.raises(ValueError) as error:
    _load(task, teacher=path, student=model_dirs[1])
  message = str(error.value)
  assert f"--teacher={path!r} uses another tokenizer than task 'facts'" in (
      message)
  assert f"the model's has {len(other.get_vocab())} tokens, from {path};" in (
      message)
  assert (f"the task's has {len(task.tokenizer.get_vocab())} tokens, from "
          "the task's built-in word tokenizer") in message
  with pytest.raises(ValueError, match=r"--student=.* another tokenizer"):
    _load(task, teacher=model_dirs[0], student=path)


def test_same_words_in_another_order_are_another_tokenizer(facts, tmp_path):
  task, _ = facts
  words = [w for w, _ in sorted(task.tokenizer.get_vocab().items(),
                                key=lambda item: item[1])
           if w not in word_tokenizer.SPECIAL_TOKENS]
  shuffled = word_tokenizer.make_word_tokenizer(words[::-1])
  path = _save(tmp_path / "shuffled", task, shuffled)
  with pytest.raises(ValueError, match=r"token '.*' has id \d+ against \d+"):
    _load(task, teacher=path, student=path)


def test_tokenizer_difference():
  a = word_tokenizer.make_word_tokenizer(["x", "y"])
  assert setup.tokenizer_difference(a, a) is None
  assert setup.tokenizer_difference(
      a, word_tokenizer.make_word_tokenizer(["x", "y", "z"])) == (
          "6 tokens against 7")
  b = word_tokenizer.make_word_tokenizer(["x", "y"])
  b.eos_token = "x"
  assert setup.tokenizer_difference(b, a) == "eos_token_id 4 against 2"


def test_the_task_tokenizer_and_a_missing_one_are_accepted(
    facts, model_dirs, tmp_path, caplog):
  task, _ = facts
  models = _load(task, *model_dirs)
  assert models.teacher is not None
  bare = tmp_path / "bare"
  shutil.copytree(model_dirs[0], bare)
  for name in ("tokenizer.json", "tokenizer_config.json",
               "special_tokens_map.json"):
    (bare / name).unlink(missing_ok=True)
  with caplog.at_level(logging.WARNING):
    _load(task, teacher=str(bare), student=model_dirs[1])
  assert "no tokenizer files" in caplog.text


def test_a_completion_longer_than_the_positions_is_refused(
    model_dirs, tmp_path, monkeypatch):
  # The tiny models hold 128 positions; facts prompts take up to 88 tokens.
  def no_work(*args, **kwargs):
    raise AssertionError("work started despite bad input")

  monkeypatch.setattr(train.loop, "train", no_work)
  monkeypatch.setattr(train.evaluation, "evaluate", no_work)
  teacher, student = model_dirs
  run_values = train.default_values(
      teacher=teacher, student=student, workdir=str(tmp_path / "w"),
      max_new_tokens=100_000)
  with pytest.raises(ValueError) as error:
    train.run(run_values, progress=False)
  assert str(error.value) == (
      f"max_new_tokens=100000 is not allowed; {student} holds 128 positions "
      "(max_position_embeddings) and the task's prompts take up to 88 "
      "tokens, so at most 40 new tokens fit.")


def test_evaluate_refuses_a_completion_beyond_the_positions(facts,
                                                            model_dirs):
  task, _ = facts
  model, params = networks.from_pretrained(model_dirs[1])
  with pytest.raises(ValueError, match=r"max_new_tokens=41 .* at most 40"):
    evaluation.evaluate(model=model, params=params, task=task,
                        num_examples=1, max_new_tokens=41)


def test_skip_bad_rows_flag_reaches_the_hub_task(model_dirs, tmp_path):
  rows = [{"question": f"q {i}", "answer": f"a #### {i}"} for i in range(30)]
  rows[3]["answer"] = "no marker"
  path = tmp_path / "gsm8k.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  with pytest.raises(ValueError, match=r"gsm8k: 1 of 30 rows .*train row 4"):
    setup.make_task("gsm8k", data_files=[str(path)],
                    model_path=model_dirs[1])
  task, _ = setup.make_task("gsm8k", data_files=[str(path)],
                            model_path=model_dirs[1], skip_bad_rows=True)
  assert sum(len(d) for d in task.splits.values()) == 29
  assert train.default_values(skip_bad_rows=True)["skip_bad_rows"] is True
  assert train.default_values()["skip_bad_rows"] is False
  with pytest.raises(ValueError, match="--skip_bad_rows is for the hub"):
    setup.make_task("facts", skip_bad_rows=True)
