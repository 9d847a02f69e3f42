"""Checks of a hub task's data when it loads: files first, then every row.

Local files are read once before `datasets` sees them, so that an empty
file, a whitespace-only file, a line that is not JSON or bytes that are not
UTF-8 give one error naming the file, the line and what was expected,
instead of a `StopIteration` or `DatasetGenerationError` from deep inside
`datasets`.

Once loaded, every row of every split is checked: its source and target
must be non-empty text, and the target must pass the task's own check
(GSM8K: a `#### <number>` answer). Bad rows are counted and located
(split, row counted from 1 in file order, and the file line where the split
is one JSON-lines file); the task refuses them, or drops them with a
warning giving the count when `skip_bad_rows=True`. A bad row is thus found
when the task loads, never when a batch happens to hold it.
"""

from collections.abc import Callable, Mapping, Sequence
import glob
import json
import pathlib
from typing import Any

from absl import logging
import datasets

_SHOWN = 5  # bad rows named in a message; the rest are counted


def expand(paths: Sequence[str]) -> list[str]:
  """The files `paths` name, globs expanded (sorted), in order."""
  return [f for p in paths for f in (sorted(glob.glob(p)) or [p])]


def _read_text(path: str, expected: str) -> str:
  raw = pathlib.Path(path).read_bytes()
  try:
    text = raw.decode("utf-8")
  except UnicodeDecodeError as e:
    line = raw[:e.start].count(b"\n") + 1
    column = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
    raise ValueError(
        f"{path}, line {line}: byte 0x{raw[e.start]:02x} at column {column} "
        f"is not UTF-8; expected UTF-8 text ({expected}).") from None
  if not text.strip():
    state = "empty" if not text else "only whitespace"
    raise ValueError(f"{path}: the file is {state}; expected {expected}.")
  return text


def _json_lines(path: str, text: str, expected: str) -> list[int]:
  """Line numbers of the records of a JSON-lines text (blank lines skipped)."""
  lines = []
  for number, line in enumerate(text.splitlines(), start=1):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
    except json.JSONDecodeError as e:
      raise ValueError(
          f"{path}, line {number}: not valid JSON ({e.msg} at column "
          f"{e.colno}); expected {expected}.") from None
    if not isinstance(record, dict):
      raise ValueError(
          f"{path}, line {number}: a JSON {type(record).__name__} where a "
          f"JSON object was expected; expected {expected}.")
    lines.append(number)
  return lines


def check_files(files: Mapping[str, Sequence[str]], builder: str,
                columns: Sequence[str]) -> dict[str, list[int] | None]:
  """Reads every local file once and refuses what `datasets` cannot read.

  Args:
    files: split -> paths (globs allowed).
    builder: the `datasets` builder, "json", "csv" or "parquet".
    columns: the columns each row must have (for the messages).

  Returns:
    path -> the file line of each record for JSON-lines files, else None.

  Raises:
    ValueError: naming the file and, where known, the line.
  """
  record_lines = {}
  for path in expand([p for paths in files.values() for p in paths]):
    if builder == "parquet":
      record_lines[path] = None
      continue
    if builder == "csv":
      _read_text(path, f"CSV with a header row {list(columns)}")
      record_lines[path] = None
      continue
    expected = f"one JSON object per line with keys {list(columns)}"
    text = _read_text(path, expected)
    try:
      whole = json.loads(text)
    except json.JSONDecodeError:
      record_lines[path] = _json_lines(path, text, expected)
      continue
    if isinstance(whole, dict):  # a one-line (or pretty-printed) object
      record_lines[path] = [1] if len(text.strip().splitlines()) == 1 else None
    elif isinstance(whole, list) and all(isinstance(r, dict) for r in whole):
      record_lines[path] = None
    else:
      raise ValueError(
          f"{path}: a JSON {type(whole).__name__} that is not a list of "
          f"objects; expected {expected}, or a JSON list of such objects.")
  return record_lines


def _problem(row: Mapping[str, Any], source: str, target: str,
             check_target: Callable[[str], str | None] | None) -> str | None:
  for column in (source, target):
    value = row.get(column)
    if value is None:
      return f"no {column!r} (missing or null)"
    if not isinstance(value, str):
      return (f"{column!r} is {type(value).__name__} {value!r}, where text "
              "was expected")
    if not value.strip():
      return f"{column!r} is empty"
  return check_target(row[target]) if check_target else None


def _where(split: str, row: int, files: Sequence[str],
           record_lines: Mapping[str, list[int] | None]) -> str:
  where = f"{split} row {row + 1}"
  if len(files) == 1 and record_lines.get(files[0]) is not None:
    lines = record_lines[files[0]]
    if row < len(lines):
      where += f" ({files[0]}, line {lines[row]})"
  return where


def check_rows(name: str, splits: dict[str, datasets.Dataset], *,
               source: str, target: str,
               check_target: Callable[[str], str | None] | None = None,
               skip_bad_rows: bool = False,
               files: Mapping[str, Sequence[str]] | None = None,
               record_lines: Mapping[str, list[int] | None] | None = None,
               where: str = "the data") -> dict[str, datasets.Dataset]:
  """Checks every row of every split; refuses or drops the bad ones.

  Args:
    name: the task name (for messages).
    splits: split -> dataset with the `source` and `target` columns.
    source: the source column.
    target: the target column.
    check_target: the task's check of a target text: a problem or None.
    skip_bad_rows: drop bad rows (with a warning) instead of refusing.
    files: split -> local paths, to name file lines; None for the hub.
    record_lines: what `check_files` returned.
    where: what the data is called in messages.

  Returns:
    The splits, without the bad rows when `skip_bad_rows`.

  Raises:
    ValueError: a split has bad rows (without `skip_bad_rows`), or none
      is left (with it); the message counts them and names the first few.
  """
  files = {s: expand(p) for s, p in (files or {}).items()}
  bad, total, out = [], 0, {}
  for split, dataset in splits.items():
    keep = []
    columns = dataset.select_columns([source, target])
    for start in range(0, len(columns), 1024):
      batch = columns[start:start + 1024]
      for offset, values in enumerate(zip(batch[source], batch[target])):
        i = start + offset
        problem = _problem(dict(zip((source, target), values)), source,
                           target, check_target)
        if problem is None:
          keep.append(i)
        else:
          location = _where(split, i, files.get(split, ()),
                            record_lines or {})
          bad.append(f"{location}: {problem}")
    total += len(dataset)
    out[split] = (dataset if len(keep) == len(dataset)
                  else dataset.select(keep))
  if not bad:
    return splits
  listed = "; ".join(bad[:_SHOWN]) + (
      f"; and {len(bad) - _SHOWN} more" if len(bad) > _SHOWN else "")
  summary = f"{name}: {len(bad)} of {total} rows of {where} are unusable: "
  if not skip_bad_rows:
    raise ValueError(
        f"{summary}{listed}. Each row needs non-empty text in {source!r} "
        f"and {target!r}" + (" and a valid answer" if check_target else "")
        + "; fix them, or pass skip_bad_rows=True (--skip_bad_rows) to drop "
        "them.")
  empty = [s for s, d in out.items() if len(d) == 0]
  if empty:
    raise ValueError(f"{summary}{listed}; no row is left in {empty}.")
  logging.warning("%sdropped (skip_bad_rows): %s.", summary, listed)
  return out
