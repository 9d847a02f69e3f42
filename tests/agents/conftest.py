"""Tiny models on a small `facts` task, shared by the agent tests."""

import jax
import pytest

from gkdrl import networks
from gkdrl import tasks
from tests.tiny_models import tiny_config


@pytest.fixture(scope="session")
def facts_task():
  return tasks.make_task("facts", num_train=64, num_validation=16,
                         num_test=16)


@pytest.fixture(scope="session")
def tiny_models(facts_task):
  """(student, student_params, teacher, teacher_params)."""
  student = networks.make_model(tiny_config(facts_task, 16, 1))
  teacher = networks.make_model(tiny_config(facts_task, 24, 1))
  return (student, student.init(jax.random.key(0)), teacher,
          teacher.init(jax.random.key(1)))


@pytest.fixture(scope="session")
def fixed_batch(facts_task):
  return next(facts_task.batches("train", 4, fixed_shape=True))
