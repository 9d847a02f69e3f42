"""The runners' persistent compilation cache and compile-time line."""

import os

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental.compilation_cache import compilation_cache as jax_cache
import pytest

from gkdrl.runners import compilation
from gkdrl.runners import config as config_lib
from gkdrl.runners import workdir as workdir_lib

_SETTINGS = ("jax_compilation_cache_dir",
             "jax_persistent_cache_min_compile_time_secs",
             "jax_persistent_cache_min_entry_size_bytes",
             "jax_compilation_cache_max_size")


@pytest.fixture
def no_cache_set(monkeypatch):
  """JAX with no cache directory and no environment switch (the suite's
  conftest sets one); the test process's settings restored."""
  monkeypatch.delenv(compilation.ENV_SWITCH, raising=False)
  saved = {name: getattr(jax.config, name) for name in _SETTINGS}
  jax.config.update("jax_compilation_cache_dir", None)
  jax_cache.reset_cache()
  yield
  for name, value in saved.items():
    jax.config.update(name, value)
  jax_cache.reset_cache()


def test_the_cache_lives_under_the_gkdrl_cache(monkeypatch, tmp_path):
  monkeypatch.setenv("GKDRL_CACHE_DIR", str(tmp_path / "root"))
  assert compilation.cache_dir() == tmp_path / "root" / "xla"
  assert compilation.cache_dir(tmp_path / "mine") == tmp_path / "mine" / "xla"


def test_use_cache_writes_compiled_programs_there(no_cache_set, tmp_path):
  directory = compilation.use_cache(True, tmp_path)
  assert directory == str(tmp_path / "xla")
  before = compilation.totals()
  # A program that compiles in far under a second is kept too.
  x = np.arange(7.0, dtype=np.float32)
  jax.jit(lambda x: jnp.sin(x) * 3.0 + 1.25)(x).block_until_ready()
  assert list((tmp_path / "xla").iterdir())
  assert compilation.totals()["compiled"] == before["compiled"] + 1
  assert compilation.totals()["seconds"] > before["seconds"]
  assert "Compiling took" in compilation.summary()
  assert str(tmp_path / "xla") in compilation.summary()


def test_off_leaves_jax_without_a_cache(no_cache_set, tmp_path):
  assert compilation.use_cache(False, tmp_path) is None
  assert jax.config.jax_compilation_cache_dir is None
  assert not (tmp_path / "xla").exists()


@pytest.mark.parametrize("value", ["0", "false", "OFF"])
def test_the_environment_switch_turns_the_flag_off(no_cache_set, monkeypatch,
                                                   tmp_path, value):
  monkeypatch.setenv(compilation.ENV_SWITCH, value)
  assert compilation.use_cache(True, tmp_path) is None
  assert jax.config.jax_compilation_cache_dir is None
  assert not (tmp_path / "xla").exists()


def test_the_suite_keeps_its_processes_off_the_cache():
  # conftest's switch, inherited by the runners' subprocesses.
  if os.environ.get("GKDRL_TEST_COMPILATION_CACHE"):
    pytest.skip("the suite's compilation cache was opted into")
  assert os.environ[compilation.ENV_SWITCH] == "0"


def test_a_cache_set_elsewhere_is_kept(no_cache_set, tmp_path):
  jax.config.update("jax_compilation_cache_dir", str(tmp_path / "theirs"))
  assert compilation.use_cache(True, tmp_path) == str(tmp_path / "theirs")
  assert not (tmp_path / "xla").exists()


def test_the_setting_is_on_by_default_and_safe_to_change():
  assert config_lib.RunConfig().compilation_cache is True
  assert "compilation_cache" in config_lib.setting_names()
  assert "compilation_cache" in workdir_lib.SAFE_TO_CHANGE


def test_programs_are_released_only_near_the_mapping_limit():
  add_one = jax.jit(lambda x: x + 1)
  add_one(1)
  assert add_one._cache_size() == 1  # pylint: disable=protected-access
  used, limit = compilation.memory_mappings()
  assert 0 < used < limit
  assert not compilation.release_programs_if_crowded(fraction=2.0)
  assert add_one._cache_size() == 1  # pylint: disable=protected-access
  assert compilation.release_programs_if_crowded(fraction=0.0)
  assert add_one._cache_size() == 0  # pylint: disable=protected-access
