"""A student made of every k-th teacher block."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gkdrl import networks
from gkdrl.networks import layer_selection
from gkdrl.networks import model as model_lib

CONFIG = networks.ModelConfig(vocab_size=40, d_model=16, n_layers=5,
                              n_heads=2, n_kv_heads=1, d_ff=32,
                              max_positions=64)


@pytest.fixture(scope="module")
def teacher():
  model = networks.make_model(CONFIG)
  return model, model.init(jax.random.key(0))


def _tokens():
  tokens = jax.random.randint(jax.random.key(1), (2, 7), 0, 40)
  mask = jnp.ones((2, 7), bool).at[1, :3].set(False)  # a left-padded row
  return tokens, mask


@pytest.mark.parametrize("n_layers,k,expected", [
    (30, 3, (0, 3, 6, 9, 12, 15, 18, 21, 24, 27)),
    (5, 2, (0, 2, 4)), (5, 5, (0,)), (4, 1, (0, 1, 2, 3))])
def test_every_kth_layer(n_layers, k, expected):
  assert layer_selection.every_kth_layer(n_layers, k) == expected


def test_student_equals_teacher_with_dropped_blocks_made_identity(teacher):
  # Independent reference: a block whose attention output and MLP down
  # projections are zero adds nothing to the residual stream (this Llama
  # config has no biases), so the teacher with blocks 1 and 3 zeroed out
  # computes what the student of blocks 0, 2, 4 computes.
  model, params = teacher
  student, student_params = layer_selection.keep_every_kth_layer(
      model, params, k=2)
  assert student.config.n_layers == 3
  dropped = jnp.array([1, 3])
  zeroed = dict(params)
  for module in ("lm/layers/attention/out", "lm/layers/mlp/down"):
    zeroed[module] = {"w": params[module]["w"].at[dropped].set(0.0)}
  tokens, mask = _tokens()
  np.testing.assert_allclose(
      student.apply(student_params, tokens, mask),
      model.apply(zeroed, tokens, mask), rtol=1e-5, atol=1e-5)
  # Without zeroing, the dropped blocks matter: the reference is not vacuous.
  assert not np.allclose(student.apply(student_params, tokens, mask),
                         model.apply(params, tokens, mask), atol=1e-3)


def test_keeping_every_layer_reproduces_the_teacher(teacher):
  model, params = teacher
  student, student_params = layer_selection.keep_every_kth_layer(
      model, params, k=1)
  tokens, mask = _tokens()
  np.testing.assert_array_equal(student.apply(student_params, tokens, mask),
                                model.apply(params, tokens, mask))


def test_shared_parts_are_equal_copies(teacher):
  model, params = teacher
  _, student_params = layer_selection.keep_layers(model, params, (1, 4))
  embed = student_params[model_lib.EMBED]["embeddings"]
  np.testing.assert_array_equal(embed, params[model_lib.EMBED]["embeddings"])
  embed[0, 0] += 1.0  # a copy: the teacher's table is untouched
  assert embed[0, 0] != params[model_lib.EMBED]["embeddings"][0, 0]
  np.testing.assert_array_equal(
      student_params["lm/layers/mlp/up"]["w"],
      np.asarray(params["lm/layers/mlp/up"]["w"])[[1, 4]])


def test_student_saves_and_loads(teacher, tmp_path):
  model, params = teacher
  student, student_params = layer_selection.keep_every_kth_layer(
      model, params, k=3)
  networks.save_pretrained(student, student_params, tmp_path / "student")
  loaded, loaded_params = networks.from_pretrained(tmp_path / "student")
  assert loaded.config.n_layers == 2
  tokens, mask = _tokens()
  np.testing.assert_allclose(loaded.apply(loaded_params, tokens, mask),
                             student.apply(student_params, tokens, mask),
                             rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("layers", [(), (2, 1), (1, 1), (0, 5), (-1, 2)])
def test_bad_layers_are_refused(teacher, layers):
  model, params = teacher
  with pytest.raises(ValueError, match="is not allowed"):
    layer_selection.keep_layers(model, params, layers)


@pytest.mark.parametrize("k", [0, 6, 2.0, True])
def test_bad_k_is_refused(k):
  with pytest.raises(ValueError, match="k=.* is not allowed"):
    layer_selection.every_kth_layer(5, k)
