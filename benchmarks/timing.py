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
