"""Tiny random teacher/student directories for the facts task."""

import jax
import pytest

from gkdrl import networks
from gkdrl.runners import setup

SEED = 0


@pytest.fixture(scope="session")
def facts():
  task, kwargs = setup.make_task("facts", seed=SEED)
  return task, kwargs


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory, facts):
  """(teacher_dir, student_dir) of tiny random models saved as HF dirs."""
  task, _ = facts
  tok = task.tokenizer
  root = tmp_path_factory.mktemp("models")
  dirs = []
  for name, width in (("teacher", 24), ("student", 16)):
    config = networks.ModelConfig(
        vocab_size=len(tok), d_model=width, n_layers=1, n_heads=2,
        n_kv_heads=1, d_ff=2 * width, max_positions=128,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id)
    model = networks.make_model(config)
    params = model.init(jax.random.key(len(dirs)))
    dirs.append(networks.save_pretrained(model, params, root / name,
                                         tokenizer=tok))
  return tuple(str(d) for d in dirs)
