"""Config dataclasses read as flat settings: fields, types and docs.

A setting is a field of a frozen config dataclass; a nested config's
fields are settings by their own names (an agent's `rollout.top_p` is the
setting `top_p`). Its documentation is the text of the field's entry in
the Attributes section of the class docstring (or of a base class's).
Fields marked `dataclasses.field(metadata={"setting": False})` are derived
by the code that builds the config and are no settings.
"""

from collections.abc import Iterator
import dataclasses
import functools
import inspect
import re
import typing
from typing import Any


def is_setting(field: dataclasses.Field) -> bool:
  """Fields marked `metadata={"setting": False}` are derived, not set."""
  return field.metadata.get("setting", True)


@functools.cache
def field_types(cls) -> dict[str, Any]:
  return typing.get_type_hints(cls)


@functools.cache
def field_docs(cls) -> dict[str, str]:
  """{field: description} from the Attributes sections along the MRO.

  A field takes the description of the most basic class documenting it.
  """
  docs = {}
  for klass in reversed(cls.__mro__):
    for name, text in _attributes(inspect.getdoc(klass) or "").items():
      docs.setdefault(name, text)
  return docs


def _attributes(docstring: str) -> dict[str, str]:
  """{name: text} of a Google-style docstring's Attributes section."""
  match = re.search(r"^Attributes:\n((?:[ \t]+\S.*\n?|\n)*)", docstring,
                    flags=re.MULTILINE)
  if not match:
    return {}
  entries, name = {}, None
  for line in match.group(1).splitlines():
    entry = re.match(r"^  (\w+): ?(.*)$", line)
    if entry:
      name = entry.group(1)
      entries[name] = entry.group(2).strip()
    elif name and line.startswith("    "):
      entries[name] += " " + line.strip()
  return entries


def flat_fields(cls, prefix: tuple[str, ...] = ()
                ) -> Iterator[tuple[str, tuple[str, ...], Any, str, Any]]:
  """(name, path, type, doc, default) of the settings of `cls`, flattened.

  Nested config dataclasses (an agent's `rollout` and `optimizer`) give
  their own fields, by their own names; `path` locates the field.
  """
  types, docs = field_types(cls), field_docs(cls)
  for field in dataclasses.fields(cls):
    if not is_setting(field):
      continue
    kind = types[field.name]
    if dataclasses.is_dataclass(kind):
      yield from flat_fields(kind, prefix + (field.name,))
      continue
    default = (field.default_factory()
               if field.default_factory is not dataclasses.MISSING
               else field.default)
    yield field.name, prefix + (field.name,), kind, docs.get(field.name,
                                                             ""), default


def build(cls, values: dict[tuple[str, ...], Any]):
  """`cls(...)` from {path: value}, nested configs built on the way."""
  kwargs, nested = {}, {}
  for path, value in values.items():
    if len(path) == 1:
      kwargs[path[0]] = value
    else:
      nested.setdefault(path[0], {})[path[1:]] = value
  types = field_types(cls)
  for name, sub in nested.items():
    kwargs[name] = build(types[name], sub)
  return cls(**kwargs)
