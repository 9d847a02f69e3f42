"""Timing shared by the benchmark scripts."""

import statistics
import time


def median_seconds(fn, repeats: int = 3) -> float:
  """Median wall time of `repeats` calls of `fn`, after one warm-up call
  (where JAX compiles)."""
  fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def error_line(stderr: str) -> str:
  """What a failed worker process died of: the last line of its stderr
  that holds more than whitespace and the carets under a traceback's
  source line (the exception, for a Python traceback)."""
  lines = [line.strip() for line in stderr.splitlines()]
  lines = [line for line in lines if line.strip("^~ ")]
  return lines[-1] if lines else "no error output"
