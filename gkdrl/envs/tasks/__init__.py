"""gkdrl.envs.tasks: the tasks that feed prompts to text generation.

`make_task(name, **kwargs)` builds a `Task`: train / validation / test
`datasets.Dataset` splits of (source, prompt, target) text, a tokenizer,
bucketed batching into `TaskBatch` NumPy records and the task's reward
functions. Tasks: "facts" (the built-in default, with an exact factuality
oracle), "arithmetic" (GSM8K-style word problems), "xsum" and "gsm8k"
(Hugging Face datasets, from the hub or local files).
"""

from gkdrl.envs.tasks.answers import exact_match_reward
from gkdrl.envs.tasks.answers import extract_answer
from gkdrl.envs.tasks.arithmetic import ArithmeticConfig
from gkdrl.envs.tasks.arithmetic import make_arithmetic_task
from gkdrl.envs.tasks.base import bucket_length
from gkdrl.envs.tasks.base import bucket_sizes
from gkdrl.envs.tasks.base import SPLITS
from gkdrl.envs.tasks.base import Task
from gkdrl.envs.tasks.base import TaskBatch
from gkdrl.envs.tasks.base import TextRewardFn
from gkdrl.envs.tasks.facts import FactsConfig
from gkdrl.envs.tasks.facts import make_facts_task
from gkdrl.envs.tasks.facts_oracle import check_facts
from gkdrl.envs.tasks.facts_oracle import coverage_reward
from gkdrl.envs.tasks.facts_oracle import fact_counts
from gkdrl.envs.tasks.facts_oracle import FactCheck
from gkdrl.envs.tasks.facts_oracle import factuality_reward
from gkdrl.envs.tasks.hub import DatasetUnavailableError
from gkdrl.envs.tasks.hub import make_gsm8k_task
from gkdrl.envs.tasks.hub import make_xsum_task
from gkdrl.envs.tasks.registry import DEFAULT_TASK
from gkdrl.envs.tasks.registry import make_task
from gkdrl.envs.tasks.registry import TASKS
from gkdrl.envs.tasks.word_tokenizer import make_word_tokenizer
