"""CPU programs' scratch memory kept between calls (runners.cpu_memory)."""

import json
import subprocess
import sys

import jax
from jax._src import xla_bridge
import pytest

from gkdrl.runners import config as config_lib
from gkdrl.runners import cpu_memory
from gkdrl.runners import workdir as workdir_lib
from tests import shared_programs

# A program whose scratch buffer (two 4096 x 4096 float32 products, 128 MiB,
# among others) is far above glibc's 32 MB mapping threshold; prints the
# median of the minor page faults of 7 calls after two warm-up calls.
_FAULTS = """
import json, resource, statistics, sys
import jax, jax.numpy as jnp
from gkdrl.runners import cpu_memory
kept = cpu_memory.keep_scratch_memory(sys.argv[1] == "on")
f = jax.jit(lambda x: jnp.sum(jnp.tanh(x @ x.T) * jnp.sin((2 * x) @ x.T)))
x = jnp.ones((4096, 64)) * 1e-2
faults = []
for _ in range(9):
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  f(x).block_until_ready()
  faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps(dict(kept=kept, faults=statistics.median(faults[2:]),
                      line=cpu_memory.summary())))
"""
_PAGES = 2 * 4096 * 4096 * 4 // 4096  # of the scratch buffer, 4 KiB each


def _faults_per_call(switch: str) -> dict:
  result = subprocess.run(
      [sys.executable, "-c", _FAULTS, switch], capture_output=True,
      text=True, timeout=300,
      env=shared_programs.subprocess_env(JAX_PLATFORMS="cpu"))
  assert result.returncode == 0, result.stderr[-3000:]
  return json.loads(result.stdout.strip().splitlines()[-1])


def _huge_pages_always() -> bool:
  """Transparent huge pages for every mapping: fresh blocks then fault in
  2 MB at a time, and the fault count says little."""
  try:
    with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
      return "[always]" in f.read()
  except OSError:
    return False


@pytest.mark.skipif(not cpu_memory._glibc(),  # pylint: disable=protected-access
                    reason="glibc's malloc only")
@pytest.mark.skipif(_huge_pages_always(), reason="huge pages for every "
                    "mapping hide the 4 KB faults of a fresh block")
def test_kept_scratch_memory_is_not_faulted_in_again_on_every_call():
  fresh, kept = _faults_per_call("off"), _faults_per_call("on")
  assert not fresh["kept"] and "turned off" in fresh["line"]
  assert kept["kept"], kept
  assert kept["line"] == ("CPU programs reuse their scratch memory between "
                          "calls.")
  # Fresh: every page of the mapped scratch buffer is faulted in per call
  # (kept, now and then a call still faults part of it in).
  assert fresh["faults"] > _PAGES / 2, (fresh, _PAGES)
  assert kept["faults"] < _PAGES / 20, (kept, _PAGES)


@pytest.fixture
def not_yet_kept(monkeypatch):
  """A glibc process on JAX's CPU that has not decided yet (conftest
  decides "no" for the test processes); glibc itself never called."""
  monkeypatch.setattr(cpu_memory, "_decided", False)
  monkeypatch.setattr(cpu_memory, "_kept", False)
  monkeypatch.setattr(cpu_memory, "_why_not", "")
  monkeypatch.setattr(cpu_memory, "_glibc", lambda: True)
  monkeypatch.setattr(cpu_memory, "_configured_platforms", lambda: "cpu")

  def no_mallopt(*unused):
    raise AssertionError("glibc was called")

  monkeypatch.setattr(cpu_memory.ctypes, "CDLL", no_mallopt)


def _async_dispatch() -> bool:
  return xla_bridge._CPU_ENABLE_ASYNC_DISPATCH.value  # pylint: disable=protected-access


def test_nothing_changes_once_jax_has_started(not_yet_kept):
  jax.devices()  # this process's backends have started
  assert not cpu_memory.keep_scratch_memory()
  assert not cpu_memory.keep_scratch_memory()  # decided
  assert _async_dispatch()
  assert cpu_memory.summary() == (
      "CPU programs take fresh scratch memory on every call: JAX's backends "
      "had started before it was asked for.")


def test_turned_off_changes_nothing_and_the_first_call_decides(
    not_yet_kept):
  assert not cpu_memory.keep_scratch_memory(False)
  assert _async_dispatch()
  assert "turned off (--cpu_scratch_reuse=false)" in cpu_memory.summary()
  assert not cpu_memory.keep_scratch_memory(True)
  assert "turned off" in cpu_memory.summary()


@pytest.mark.parametrize("platforms,plugins,why", [
    ("cpu", ["xla_cuda12"], "had started"),
    ("cpu,cuda", [], "had started"),
    ("cuda", [], "JAX runs on an accelerator (JAX_PLATFORMS='cuda')"),
    ("tpu,cpu", [], "JAX runs on an accelerator (JAX_PLATFORMS='tpu,cpu')"),
    (None, [], "had started"),
    (None, ["xla_cuda12"], "an accelerator plugin is installed (xla_cuda12)"
     "; on a machine without the accelerator, JAX_PLATFORMS=cpu lets it "
     "act"),
])
def test_only_a_run_on_jaxs_cpu_backend_is_changed(monkeypatch, not_yet_kept,
                                                   platforms, plugins, why):
  monkeypatch.setattr(cpu_memory, "_configured_platforms",
                      lambda: platforms)
  monkeypatch.setattr(cpu_memory, "_accelerator_plugins", lambda: plugins)
  jax.devices()  # so that a CPU run stops at "had started", unchanged
  assert not cpu_memory.keep_scratch_memory()
  assert why in cpu_memory.summary()
  assert _async_dispatch()


def test_the_runners_reuse_it_by_default_and_a_resume_may_change_it():
  assert config_lib.RunConfig().cpu_scratch_reuse is True
  assert "cpu_scratch_reuse" in config_lib.setting_names()
  assert "cpu_scratch_reuse" in workdir_lib.SAFE_TO_CHANGE
