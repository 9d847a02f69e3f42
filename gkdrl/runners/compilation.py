"""The runners' persistent XLA compilation cache, and their compile time.

    cache = compilation.use_cache(True, cache_dir=None)  # <root>/xla
    ...
    print(compilation.summary())  # "compiling: 12.3 s in 41 programs, ..."

JAX writes every compiled program to `<root>/xla`, where `<root>` is the
gkdrl cache (`--cache_dir`, else `$GKDRL_CACHE_DIR`, else ~/.cache/gkdrl,
as for the built-in models), and a later run of the same configuration
loads them instead of compiling again. Programs of any size and compile
time are kept (JAX's defaults skip those that compile in under a second,
most of a small model's). A cache directory already set in JAX's config
(`jax_compilation_cache_dir`, e.g. by a test harness or the user) is kept.
`--compilation_cache=false` leaves JAX's config as it is, and so does
`$GKDRL_COMPILATION_CACHE=0` whatever the flag says (the test suite sets it,
so that no test process writes to the user's cache).

`release_programs_if_crowded()` drops JAX's compiled programs when the
process nears the kernel's limit on memory mappings, which a process that
compiles thousands of programs would otherwise reach and abort at.
"""

import collections
import os
import pathlib

import jax
from jax.experimental.compilation_cache import compilation_cache as jax_cache

from gkdrl.runners import builtin

_COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration",
                   "/jax/core/compile/jaxpr_to_mlir_module_duration",
                   "/jax/core/compile/backend_compile_duration")
_HIT = "/jax/compilation_cache/cache_hits"
_BACKEND = "/jax/core/compile/backend_compile_duration"

_totals: collections.Counter[str] = collections.Counter()
_listening = False


# Set to 0 (or false, off, no), this environment variable turns the cache off.
ENV_SWITCH = "GKDRL_COMPILATION_CACHE"
_OFF = ("0", "false", "off", "no")

# The cache's size bound; the least recently used entries go beyond it.
MAX_CACHE_BYTES = 4 * 2**30


def cache_dir(root: str | pathlib.Path | None = None) -> pathlib.Path:
  """`<root>/xla`, `root` defaulting to the gkdrl cache."""
  root = builtin.default_cache_dir() if root is None else pathlib.Path(root)
  return root.expanduser() / "xla"


def use_cache(enabled: bool, root: str | pathlib.Path | None = None
              ) -> str | None:
  """Turns on the persistent cache under `root`; returns its directory.

  Args:
    enabled: False, or $GKDRL_COMPILATION_CACHE=0, leaves JAX's config as
      it is (returns its directory, None unless set elsewhere).
    root: the gkdrl cache root (None: $GKDRL_CACHE_DIR or ~/.cache/gkdrl).

  Returns:
    The cache directory JAX uses, or None.
  """
  _listen()
  current = jax.config.jax_compilation_cache_dir
  if os.environ.get(ENV_SWITCH, "").strip().lower() in _OFF:
    enabled = False
  if not enabled or current:
    return current
  directory = cache_dir(root)
  directory.mkdir(parents=True, exist_ok=True)
  jax.config.update("jax_compilation_cache_dir", str(directory))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  # A size bound turns on JAX's file lock around each read and write, so
  # processes sharing the cache (sweeps, --jobs) never read a half-written
  # entry; without one JAX writes entries unlocked.
  jax.config.update("jax_compilation_cache_max_size", MAX_CACHE_BYTES)
  # A program compiled before this call made JAX settle on "no cache".
  jax_cache.reset_cache()
  return str(directory)


def _listen() -> None:
  global _listening
  if _listening:
    return
  _listening = True

  def on_duration(event, seconds, **kwargs):
    del kwargs
    if event in _COMPILE_EVENTS:
      _totals["seconds"] += seconds
    if event == _BACKEND:
      _totals["compiled"] += 1
      _totals["xla_seconds"] += seconds

  def on_event(event, **kwargs):
    del kwargs
    if event == _HIT:
      _totals["hits"] += 1

  jax.monitoring.register_event_duration_secs_listener(on_duration)
  jax.monitoring.register_event_listener(on_event)


def totals() -> dict[str, float]:
  """Since `use_cache` was first called: seconds spent compiling (tracing,
  lowering and XLA, nested traces counted each time), of them in XLA or
  loading from the persistent cache (what the cache saves), programs
  compiled, programs loaded from the persistent cache."""
  return {"seconds": _totals["seconds"],
          "xla_seconds": _totals["xla_seconds"],
          "compiled": _totals["compiled"], "cache_hits": _totals["hits"]}


def summary() -> str:
  """One line for a run's log: the compile time and the cache hits."""
  t = totals()
  directory = jax.config.jax_compilation_cache_dir
  where = (f"{t['cache_hits']} of them loaded from the cache in {directory}"
           if directory else "no persistent compilation cache")
  return (f"Compiling took {t['seconds']:.1f} s, {t['xla_seconds']:.1f} s of "
          f"it in XLA ({t['compiled']} programs; {where}).")


def memory_mappings() -> tuple[int, int] | None:
  """(this process's memory mappings, the kernel's limit), or None where
  /proc does not tell (not Linux)."""
  try:
    with open("/proc/self/maps", "rb") as f:
      used = sum(1 for _ in f)
    with open("/proc/sys/vm/max_map_count") as f:
      limit = int(f.read())
  except (OSError, ValueError):
    return None
  return used, limit


def release_programs_if_crowded(fraction: float = 0.5) -> bool:
  """Drops JAX's compiled programs when mappings near the kernel's limit.

  Each program XLA compiles for the CPU keeps memory mappings of its code
  for as long as JAX caches it. A process that compiles thousands (a study
  of hundreds of runs, a long test session) can reach `vm.max_map_count`
  (65,530 by default), and LLVM then aborts the process while mapping the
  next program ("Cannot allocate memory"). Past `fraction` of the limit
  this calls `jax.clear_caches()`; later calls compile again, or load
  from the persistent cache.

  Returns:
    Whether the programs were dropped.
  """
  counts = memory_mappings()
  if counts is None or counts[0] < fraction * counts[1]:
    return False
  jax.clear_caches()
  return True
