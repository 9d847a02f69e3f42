"""gkdrl.agents: SFT, SeqKD, supervised KD, GKD, RL and GKD+RL.

Each agent is a frozen, validated config dataclass plus pure `init`, `act`
and `update` functions (`make_agent(config, ...) -> Agent`); `update` is one
jitted function of (state, batch, teacher params, key).
"""

from gkdrl.agents.acting import decode_completions
from gkdrl.agents.acting import draw_student_data
from gkdrl.agents.agents import AGENT_CONFIGS
from gkdrl.agents.agents import agent_name
from gkdrl.agents.agents import make_agent
from gkdrl.agents.agents import make_config
from gkdrl.agents.agents import make_gkd_rl_loss
from gkdrl.agents.base import Agent
from gkdrl.agents.base import AgentConfig
from gkdrl.agents.base import completion_hidden
from gkdrl.agents.base import completion_logits
from gkdrl.agents.base import token_log_probs
from gkdrl.agents.base import TrainingState
from gkdrl.agents.configs import DistillationConfig
from gkdrl.agents.configs import GKDConfig
from gkdrl.agents.configs import GKDRLConfig
from gkdrl.agents.configs import RLConfig
from gkdrl.agents.configs import SeqKDConfig
from gkdrl.agents.configs import SFTConfig
from gkdrl.agents.configs import SupervisedKDConfig
from gkdrl.agents.optimizer import make_optimizer
from gkdrl.agents.optimizer import OptimizerConfig

__all__ = [
    "AGENT_CONFIGS", "Agent", "AgentConfig", "DistillationConfig",
    "GKDConfig", "GKDRLConfig", "OptimizerConfig", "RLConfig", "SFTConfig",
    "SeqKDConfig", "SupervisedKDConfig", "TrainingState", "agent_name",
    "completion_hidden", "completion_logits", "decode_completions",
    "draw_student_data", "make_agent", "make_config", "make_gkd_rl_loss",
    "make_optimizer", "token_log_probs",
]
