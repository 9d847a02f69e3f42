"""Tiny random teacher/student directories for the facts task."""

import jax
import pytest

from gkdrl import networks
from gkdrl.runners import setup
from tests.tiny_models import tiny_config

SEED = 0


@pytest.fixture(scope="session")
def facts():
  task, kwargs = setup.make_task("facts", seed=SEED)
  return task, kwargs


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory, facts):
  """(teacher_dir, student_dir) of tiny random models saved as HF dirs."""
  task, _ = facts
  root = tmp_path_factory.mktemp("models")
  dirs = []
  for name, width in (("teacher", 24), ("student", 16)):
    config = tiny_config(task, width, 1)
    model = networks.make_model(config)
    params = model.init(jax.random.key(len(dirs)))
    dirs.append(networks.save_pretrained(model, params, root / name,
                                         tokenizer=task.tokenizer))
  return tuple(str(d) for d in dirs)
