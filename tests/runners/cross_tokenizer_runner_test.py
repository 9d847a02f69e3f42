"""train --cross_tokenizer: a teacher directory with its own tokenizer."""

import dataclasses
import json

import jax
import pytest

from gkdrl import networks
from gkdrl.runners import train
from tests.runners.runners_test import _metrics
from tests.runners.runners_test import values
from tests.tiny_models import tiny_config
from tests.tiny_models import word_piece_tokenizer


@pytest.fixture(scope="module")
def word_piece_teacher(tmp_path_factory, facts):
  task, _ = facts
  tok = word_piece_tokenizer(task)
  config = dataclasses.replace(
      tiny_config(task, 24, 1), vocab_size=len(tok), max_positions=512,
      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
      bos_token_id=tok.bos_token_id)
  model = networks.make_model(config)
  return str(networks.save_pretrained(
      model, model.init(jax.random.key(3)),
      tmp_path_factory.mktemp("models") / "word_piece_teacher",
      tokenizer=tok))


def test_a_teacher_with_its_own_tokenizer_needs_the_flag(
    model_dirs, word_piece_teacher, tmp_path):
  dirs = (word_piece_teacher, model_dirs[1])
  with pytest.raises(ValueError, match="--cross_tokenizer=align or uld"):
    train.run(values(dirs, tmp_path / "refused", agent="gkd", steps=1),
              progress=False)


@pytest.mark.slow
def test_gkd_trains_across_tokenizers(model_dirs, word_piece_teacher,
                                      tmp_path):
  workdir = tmp_path / "run"
  dirs = (word_piece_teacher, model_dirs[1])
  train.run(values(dirs, workdir, agent="gkd", cross_tokenizer="align",
                   divergence="forward_kl", steps=2, save_every=2,
                   eval_examples=4, eval_samples_per_prompt=1),
            progress=False)
  records = _metrics(workdir)
  assert [r["step"] for r in records] == [1, 2]
  assert all(0 < r["cross_tokenizer/exact_fraction"] < 1 for r in records)
  config = json.loads((workdir / "config.json").read_text())
  assert config["agent_config"]["cross_tokenizer"] == "align"
