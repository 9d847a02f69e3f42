"""The tests' compile step: one compilation per distinct program."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests import shared_programs


def _scaled_sum(x):
  return jnp.sum(jnp.sin(x) * 3.25)


def test_the_same_program_from_two_functions_compiles_once():
  x = jnp.arange(7.0)
  before = shared_programs.stats()
  first = jax.jit(lambda x: _scaled_sum(x))(x)  # pylint: disable=unnecessary-lambda
  second = jax.jit(lambda x: _scaled_sum(x))(x)  # pylint: disable=unnecessary-lambda
  after = shared_programs.stats()
  assert after["compiled"] - before["compiled"] == 1
  assert after["shared"] - before["shared"] == 1
  np.testing.assert_allclose(second, first)
  np.testing.assert_allclose(first, np.sum(np.sin(np.arange(7.0)) * 3.25),
                             rtol=1e-6)


def test_programs_that_call_back_into_python_compile_each_time():
  x = jnp.float32(2.0)
  seen = []
  before = shared_programs.stats()

  def program(x):
    jax.debug.callback(seen.append, x)
    return x + 1.5

  for _ in range(2):
    jax.jit(lambda x: program(x))(x).block_until_ready()  # pylint: disable=unnecessary-lambda
  assert shared_programs.stats() == before
  assert len(seen) == 2


def test_tests_compile_without_optimisations_unless_marked():
  assert not shared_programs.optimize


@pytest.mark.xla_optimized
def test_marked_tests_compile_with_optimisations():
  assert shared_programs.optimize
