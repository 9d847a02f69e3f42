"""Scratch memory that XLA's CPU programs keep between calls (Linux, glibc).

    from gkdrl.runners import cpu_memory
    cpu_memory.keep_scratch_memory()  # before the first JAX computation

Every call of a compiled program on JAX's CPU backend takes the program's
scratch buffer (205 MiB for `benchmarks/gkd_step.py`'s default-size
update) from `malloc` and frees it at the end. glibc serves a block above
32 MB with a fresh memory mapping and unmaps it on free, so the kernel
zero-fills it page by page on every call: about 52,500 page faults and 80
to 120 ms of system time per update there (benchmarks/README.md, "Fresh
scratch memory every call"). The block comes from one of XLA's dispatch
threads, whose own glibc arena cannot hold a block above 64 MB; no
setting of glibc's alone changes that.

`keep_scratch_memory` makes the calling thread run CPU programs itself
(JAX's `jax_cpu_enable_async_dispatch` off), so the block comes from the
main heap, and tells glibc (`mallopt`) to serve large blocks from that heap
rather than from fresh mappings and to keep up to 2 GiB of freed memory
at its top: the next call reuses the same pages. Results are unchanged
(the same programs on the same inputs); the process keeps its peak scratch
memory instead of returning it to the system between calls. On 2 AMD EPYC
cores it took the default-size update of `benchmarks/gkd_step.py` from
400-484 to 341-343 ms (3 to 54 page faults per call instead of 52,572) and
that benchmark's asynchronous step from 0.49-0.52 s to 0.43-0.47 s. The
price is the overlap of host work with computation that asynchronous
dispatch gives: the default job's built-in models are so small that it
trains about 8% fewer steps per second with it, in six alternating pairs
of runs (benchmarks/README.md, "Scratch memory kept between calls"). Only
programs called from the main thread take their scratch from the main
heap: another thread's blocks above 64 MB (the sampler's with
`--async_rollouts`) are still mapped afresh, and programs
sharded over several CPU devices keep asynchronous dispatch.

It only acts where it can: on Linux with glibc, when JAX will run on its
CPU backend (`jax_platforms` names cpu first, or no accelerator plugin is
installed), and before that backend starts (the dispatch mode is fixed
when it does). Elsewhere it changes nothing and returns False. The first
call decides for the process. The training runners (`train`,
`sweep_alpha`) call it with their `--cpu_scratch_reuse` flag (on by
default) and print `summary()`.
"""

import ctypes
import importlib.metadata
import importlib.util
import pkgutil
import platform
import sys
import threading

import jax
from jax._src import xla_bridge

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
# The largest trim threshold mallopt takes (an int): freed memory at the
# top of the heap up to this size stays with the process.
_KEEP_BYTES = 2**31 - 1

_lock = threading.Lock()
_decided = False
_kept = False
_why_not = "keep_scratch_memory was not called"


def keep_scratch_memory(enabled: bool = True) -> bool:
  """Lets CPU programs reuse their scratch memory between calls.

  The first call decides for the whole process (the dispatch mode cannot
  change once JAX's CPU backend runs); later calls return its answer.

  Args:
    enabled: False changes nothing.

  Returns:
    Whether this process keeps its scratch memory: False when `enabled`
    was False, off Linux or glibc, when JAX will not run on its CPU
    backend, or when JAX's backends had already started (`summary()` says
    which).
  """
  with _lock:
    if not _decided:
      _decide(enabled)
    return _kept


def _decide(enabled: bool) -> None:
  global _decided, _kept, _why_not
  _decided = True
  if not enabled:
    _why_not = "turned off (--cpu_scratch_reuse=false)"
    return
  if not _glibc():
    _why_not = "not Linux with glibc"
    return
  not_cpu = _not_on_cpu()
  if not_cpu:
    _why_not = not_cpu
    return
  if xla_bridge.backends_are_initialized():
    _why_not = "JAX's backends had started before it was asked for"
    return
  libc = ctypes.CDLL("libc.so.6")
  # The trim threshold first: alone it changes nothing that matters.
  if not (libc.mallopt(_M_TRIM_THRESHOLD, _KEEP_BYTES)
          and libc.mallopt(_M_MMAP_MAX, 0)):
    _why_not = "glibc's mallopt refused the settings"
    return
  jax.config.update("jax_cpu_enable_async_dispatch", False)
  _kept = True


def summary() -> str:
  """One line for a run's log: whether CPU programs keep their scratch
  memory, and if not, why."""
  if _kept:
    return "CPU programs reuse their scratch memory between calls."
  return f"CPU programs take fresh scratch memory on every call: {_why_not}."


def _glibc() -> bool:
  return sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


def _not_on_cpu() -> str | None:
  """Why JAX's default backend will not be its CPU backend, or None."""
  platforms = _configured_platforms()
  if platforms:
    first = platforms.split(",")[0].strip().lower()
    return (None if first == "cpu" else
            f"JAX runs on an accelerator (JAX_PLATFORMS={platforms!r})")
  plugins = _accelerator_plugins()
  if not plugins:
    return None
  return (f"an accelerator plugin is installed ({', '.join(plugins)}); on "
          "a machine without the accelerator, JAX_PLATFORMS=cpu lets it "
          "act")


def _configured_platforms() -> str | None:
  """JAX's `jax_platforms` ($JAX_PLATFORMS): e.g. "cpu", "cuda,cpu"."""
  return jax.config.jax_platforms


def _accelerator_plugins() -> list[str]:
  """The JAX accelerator plugins installed here (GPU, TPU and others), by
  the names JAX discovers them by; JAX prefers any of them to the CPU."""
  names = [entry.name for entry in
           importlib.metadata.entry_points(group="jax_plugins")]
  try:
    import jax_plugins  # pylint: disable=g-import-not-at-top
    names += [module.name for module in
              pkgutil.iter_modules(jax_plugins.__path__)]
  except ImportError:
    pass
  if importlib.util.find_spec("libtpu") is not None:
    names.append("libtpu")
  return sorted(set(names))
