"""gkdrl.agents: SFT, SeqKD, supervised KD, GKD, RL and GKD+RL.

One module per agent (`sft`, `seqkd`, `distill` for supervised KD and GKD,
`rl`, `gkd_rl`), each with its frozen, validated config dataclass, its loss
and its act, registered by name in `registry`. `make_agent(config, ...)`
builds the `Agent(init, act, update)` of any registered config; `update` is
one jitted function of (state, batch, teacher params, key). `stacked` trains
gkd_rl at several alphas at once. What they share: `base` (state, update,
forward passes), `acting` (sampling, rewards), `optimizer`,
`accumulation` (micro-batches of one update), `vocabulary` (teacher and
student embeddings padded to different sizes).
"""

# The agent modules register themselves on import, in this order.
from gkdrl.agents import sft
from gkdrl.agents import seqkd
from gkdrl.agents import distill
from gkdrl.agents import rl
from gkdrl.agents import gkd_rl
from gkdrl.agents import stacked

from gkdrl.agents.acting import decode_completions
from gkdrl.agents.acting import draw_student_data
from gkdrl.agents.base import Agent
from gkdrl.agents.base import AgentConfig
from gkdrl.agents.base import completion_hidden
from gkdrl.agents.base import completion_logits
from gkdrl.agents.base import token_log_probs
from gkdrl.agents.base import TrainingState
from gkdrl.agents.distill import DistillationConfig
from gkdrl.agents.distill import GKDConfig
from gkdrl.agents.distill import SupervisedKDConfig
from gkdrl.agents.gkd_rl import GKDRLConfig
from gkdrl.agents.gkd_rl import make_gkd_rl_loss
from gkdrl.agents.optimizer import make_optimizer
from gkdrl.agents.optimizer import OptimizerConfig
from gkdrl.agents.registry import AGENT_CONFIGS
from gkdrl.agents.registry import agent_name
from gkdrl.agents.registry import check_vocabularies
from gkdrl.agents.registry import make_agent
from gkdrl.agents.registry import make_config
from gkdrl.agents.registry import register
from gkdrl.agents.registry import special_token_ids
from gkdrl.agents.rl import RLConfig
from gkdrl.agents.rollout_config import RolloutConfig
from gkdrl.agents.seqkd import SeqKDConfig
from gkdrl.agents.sft import SFTConfig
from gkdrl.agents.stacked import make_stacked_agent
from gkdrl.agents.vocabulary import restrict_vocabulary

__all__ = [
    "AGENT_CONFIGS", "Agent", "AgentConfig", "DistillationConfig",
    "GKDConfig", "GKDRLConfig", "OptimizerConfig", "RLConfig", "RolloutConfig",
    "SFTConfig",
    "SeqKDConfig", "SupervisedKDConfig", "TrainingState", "agent_name",
    "check_vocabularies", "completion_hidden", "completion_logits",
    "decode_completions", "draw_student_data", "make_agent", "make_config",
    "make_gkd_rl_loss", "make_optimizer", "make_stacked_agent", "register",
    "restrict_vocabulary", "special_token_ids", "token_log_probs",
]
