"""gkdrl.envs: the text-generation environment and the tasks that feed it."""

from gkdrl.envs.text_generation import EnvState
from gkdrl.envs.text_generation import Observation
from gkdrl.envs.text_generation import RewardFn
from gkdrl.envs.text_generation import TextGenerationEnv
from gkdrl.envs.text_generation import TimeStep
from gkdrl.envs.tasks import make_task, Task, TaskBatch
