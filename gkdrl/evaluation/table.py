"""Plain-text tables of evaluation results, for runners to print."""

from collections.abc import Mapping, Sequence
import math
from typing import Any


def _flatten(results: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
  """Rows of metrics; a row of modes ({"greedy": {...}}) becomes name/mode."""
  rows = {}
  for name, row in results.items():
    if not isinstance(row, Mapping):
      raise ValueError(
          f"results[{name!r}] must be a dict of metrics, got "
          f"{type(row).__name__}")
    nested = [v for v in row.values() if isinstance(v, Mapping)]
    if nested and len(nested) == len(row):
      rows.update({f"{name}/{mode}": metrics for mode, metrics in row.items()})
    elif nested:
      raise ValueError(
          f"results[{name!r}] mixes metrics and nested dicts; give either "
          "metric -> value or mode -> metrics")
    else:
      rows[str(name)] = row
  return rows


def _cell(value: Any) -> str:
  if value is None:
    return "-"
  if isinstance(value, bool):
    return str(value)
  if isinstance(value, int):
    return str(value)
  try:
    value = float(value)
  except (TypeError, ValueError):
    return str(value)
  if math.isfinite(value) and value == round(value) and abs(value) < 1e6:
    return str(int(round(value)))
  return f"{value:.4g}"


def format_table(results: Mapping[str, Any],
                 columns: Sequence[str] | None = None) -> str:
  """Formats named results as an aligned plain-text table.

      results = {"before": evaluate(...)["greedy"],
                 "after": evaluate(...)["greedy"]}
      print(format_table(results, ["reward", "rouge2", "teacher_kl"]))

      name    reward  rouge2  teacher_kl
      before  0.1234   12.34       1.234
      after   0.5678   45.67      0.2345

  Args:
    results: row name -> metric name -> value (one row per result, e.g.
      "before", "after", "teacher", or one per mode). A row whose values are
      all dicts (the output of `evaluate`) gives one row per mode, named
      "<row>/<mode>".
    columns: metric names to show, in order; None shows every metric, in
      the order they first appear. A metric a row lacks prints as "-".

  Returns:
    The table: a header line and one line per row, no trailing newline.
    Integral values print as integers, others with 4 significant digits.
  """
  if not isinstance(results, Mapping):
    raise ValueError(
        f"results must be a dict of row name -> metrics, got "
        f"{type(results).__name__}")
  rows = _flatten(results)
  if columns is None:
    columns = list(dict.fromkeys(k for row in rows.values() for k in row))
  elif isinstance(columns, str):
    raise ValueError(f"columns must be a sequence of names, got {columns!r}")
  else:
    columns = [str(c) for c in columns]
  table = [["name"] + columns]
  for name, row in rows.items():
    table.append([name] + [_cell(row.get(c)) for c in columns])
  widths = [max(len(line[j]) for line in table) for j in range(len(table[0]))]
  lines = []
  for line in table:
    cells = [line[0].ljust(widths[0])]
    cells += [cell.rjust(width) for cell, width in zip(line[1:], widths[1:])]
    lines.append("  ".join(cells).rstrip())
  return "\n".join(lines)
