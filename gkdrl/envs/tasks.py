"""Deprecated alias of `gkdrl.tasks` (the tasks moved out of `gkdrl.envs`)."""

import importlib
import sys
import warnings

from gkdrl.tasks import *  # pylint: disable=wildcard-import,unused-wildcard-import

warnings.warn("gkdrl.envs.tasks moved to gkdrl.tasks; import it from there.",
              DeprecationWarning, stacklevel=2)

# `gkdrl.envs.tasks.<module>` keeps resolving to `gkdrl.tasks.<module>`.
for _name in ("answers", "arithmetic", "base", "facts", "facts_grammar",
              "facts_oracle", "generated", "hub", "registry",
              "word_tokenizer"):
  sys.modules[f"{__name__}.{_name}"] = importlib.import_module(
      f"gkdrl.tasks.{_name}")
