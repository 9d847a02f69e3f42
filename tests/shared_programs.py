"""How the tests compile: without XLA's CPU optimisations, and once.

Most of the suite's time is XLA compiling tiny models' programs (85% of
tests/agents), not running them. Two savings, in the test processes:

- Programs compile without XLA's CPU backend optimisations
  (`xla_backend_optimization_level=0`, LLVM's expensive passes off), which
  compiles an agent's update in about half the time. The program computes
  the same function; only its rounding differs. Tests marked
  `xla_optimized` compile as usual: those whose bounds were set against
  the optimised programs' rounding, and those that run long enough for the
  slower programs to cost more than they save.
- Each distinct program compiles once per process. Each test builds its
  own agent, so JAX's caches (keyed by the Python function) miss where the
  program is the same. The last `MAX_PROGRAMS` executables are kept in
  memory, keyed as JAX's persistent cache keys them (the program without
  its debug information, the devices, the compile options with the level
  above, the XLA flags, JAX's version). Nothing is serialised (jax 0.10's
  persistent cache crashed test workers doing that) and nothing outlives
  the process. Programs that call back into Python compile every time, and
  so does everything while a persistent cache is configured (the runners'
  cache tests count what it compiles).

The tests' subprocesses (the runners' command lines, the multi-device and
multi-process scripts, the studies' quick run) compile without the
optimisations too, through XLA_FLAGS (`subprocess_env`); they share
nothing.

`clear` drops the kept programs, as conftest does whenever it drops JAX's.
"""
import collections
import copy
import functools
import logging
import os

MAX_PROGRAMS = 256

_programs: collections.OrderedDict = collections.OrderedDict()
_stats = {"compiled": 0, "shared": 0}
_installed = False
# The same two settings as XLA flags, for the tests' subprocesses.
UNOPTIMIZED_XLA_FLAGS = ("--xla_backend_optimization_level=0",
                         "--xla_llvm_disable_expensive_passes=true")
# Whether programs compile with XLA's CPU optimisations (conftest sets it
# per test: on for tests marked `xla_optimized`, off for the rest).
optimize = True


def install() -> None:
  """Wraps JAX's compile step (a warning, and no change, where this JAX
  has no such step)."""
  global _installed
  if _installed:
    return
  try:
    from jax._src import cache_key  # pylint: disable=g-import-not-at-top
    from jax._src import compiler  # pylint: disable=g-import-not-at-top
    from jax._src import config  # pylint: disable=g-import-not-at-top
    compile_step = compiler.compile_or_get_cached
    key_of = cache_key.get
  except (ImportError, AttributeError) as e:
    logging.warning("Tests compile every program: %s", e)
    return

  @functools.wraps(compile_step)
  def compile_once(backend, computation, devices, compile_options,
                   host_callbacks, *args, **kwargs):
    def compile_now():
      return compile_step(backend, computation, devices, compile_options,
                          host_callbacks, *args, **kwargs)
    if not optimize:
      compile_options = copy.deepcopy(compile_options)
      debug = compile_options.executable_build_options.debug_options
      debug.xla_backend_optimization_level = 0
      debug.xla_llvm_disable_expensive_passes = True
    if host_callbacks or config.compilation_cache_dir.value:
      return compile_now()
    key = key_of(computation, devices, compile_options, backend)
    executable = _programs.get(key)
    if executable is not None:
      _programs.move_to_end(key)
      _stats["shared"] += 1
      return executable
    executable = compile_now()
    _stats["compiled"] += 1
    _programs[key] = executable
    if len(_programs) > MAX_PROGRAMS:
      _programs.popitem(last=False)
    return executable

  compiler.compile_or_get_cached = compile_once
  _installed = True


def clear() -> None:
  """Drops the kept programs (their code's memory mappings with them)."""
  _programs.clear()


def stats() -> dict[str, int]:
  """Programs compiled and kept, and programs handed back without
  compiling (those compiled every time count in neither)."""
  return dict(_stats)


def subprocess_env(*xla_flags: str, **variables: str) -> dict[str, str]:
  """The environment of a test's subprocess: this process's, `variables`,
  and XLA_FLAGS of `xla_flags` plus `UNOPTIMIZED_XLA_FLAGS` (in place of
  any XLA_FLAGS this process has)."""
  return dict(os.environ, **variables,
              XLA_FLAGS=" ".join((*xla_flags, *UNOPTIMIZED_XLA_FLAGS)))
