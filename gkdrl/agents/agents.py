"""Deprecated: the agents moved to one module each (see gkdrl.agents).

`make_agent`, `make_config`, `agent_name` and `AGENT_CONFIGS` live in
`gkdrl.agents.registry`, `make_gkd_rl_loss` in `gkdrl.agents.gkd_rl`; all
are exported by `gkdrl.agents`.
"""

import warnings

from gkdrl.agents.gkd_rl import make_gkd_rl_loss
from gkdrl.agents.registry import AGENT_CONFIGS
from gkdrl.agents.registry import agent_name
from gkdrl.agents.registry import make_agent
from gkdrl.agents.registry import make_config

warnings.warn("gkdrl.agents.agents is deprecated; import these names from "
              "gkdrl.agents.", DeprecationWarning, stacklevel=2)

__all__ = ["AGENT_CONFIGS", "agent_name", "make_agent", "make_config",
           "make_gkd_rl_loss"]
