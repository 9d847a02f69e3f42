"""gkdrl.envs: text generation as a functional RL environment.

The data that feeds it (prompts, targets, task rewards) lives in
`gkdrl.tasks`.
"""

from gkdrl.envs.text_generation import EnvState
from gkdrl.envs.text_generation import Observation
from gkdrl.envs.text_generation import RewardFn
from gkdrl.envs.text_generation import score_rewards
from gkdrl.envs.text_generation import TextGenerationEnv
from gkdrl.envs.text_generation import TimeStep

__all__ = ["EnvState", "Observation", "RewardFn", "TextGenerationEnv",
           "TimeStep", "score_rewards"]
