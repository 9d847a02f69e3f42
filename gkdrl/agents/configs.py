"""Deprecated: each agent's config moved to its module (see gkdrl.agents).

All the config classes are exported by `gkdrl.agents`.
"""

import warnings

from gkdrl.agents.distill import DistillationConfig
from gkdrl.agents.distill import GKDConfig
from gkdrl.agents.distill import LARGE_VOCABULARY
from gkdrl.agents.distill import SupervisedKDConfig
from gkdrl.agents.gkd_rl import GKDRLConfig
from gkdrl.agents.rl import RLConfig
from gkdrl.agents.seqkd import SeqKDConfig
from gkdrl.agents.sft import SFTConfig

warnings.warn("gkdrl.agents.configs is deprecated; import the configs from "
              "gkdrl.agents.", DeprecationWarning, stacklevel=2)

__all__ = ["DistillationConfig", "GKDConfig", "GKDRLConfig",
           "LARGE_VOCABULARY", "RLConfig", "SFTConfig", "SeqKDConfig",
           "SupervisedKDConfig"]
