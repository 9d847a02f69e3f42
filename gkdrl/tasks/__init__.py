"""gkdrl.tasks: the tasks that feed prompts to text generation.

`make_task(name, **kwargs)` builds a `Task`: train / validation / test
`datasets.Dataset` splits of (source, prompt, target) text, a tokenizer,
bucketed batching into `TaskBatch` NumPy records and the task's reward
functions. Tasks: "facts" (the built-in default, with an exact factuality
oracle; `facts_preference_pairs` derives an oracle-labelled preference set
from it), "arithmetic" (GSM8K-style word problems), "xsum" and "gsm8k"
(Hugging Face datasets, from the hub or local files).
"""

from gkdrl.tasks.answers import exact_match_reward
from gkdrl.tasks.answers import extract_answer
from gkdrl.tasks.arithmetic import ArithmeticConfig
from gkdrl.tasks.arithmetic import make_arithmetic_task
from gkdrl.tasks.base import bucket_length
from gkdrl.tasks.base import bucket_sizes
from gkdrl.tasks.base import SPLITS
from gkdrl.tasks.base import Task
from gkdrl.tasks.base import TaskBatch
from gkdrl.tasks.base import TextRewardFn
from gkdrl.tasks.facts import FactsConfig
from gkdrl.tasks.facts import make_facts_task
from gkdrl.tasks.facts_oracle import check_facts
from gkdrl.tasks.facts_oracle import coverage_reward
from gkdrl.tasks.facts_oracle import fact_counts
from gkdrl.tasks.facts_oracle import FactCheck
from gkdrl.tasks.facts_oracle import factuality_reward
from gkdrl.tasks.facts_preferences import facts_preference_pairs
from gkdrl.tasks.hub import DatasetUnavailableError
from gkdrl.tasks.hub import make_gsm8k_task
from gkdrl.tasks.hub import make_xsum_task
from gkdrl.tasks.registry import DEFAULT_TASK
from gkdrl.tasks.registry import make_task
from gkdrl.tasks.registry import TASKS
from gkdrl.tasks.word_tokenizer import make_word_tokenizer

__all__ = [
    "ArithmeticConfig", "bucket_length", "bucket_sizes", "check_facts",
    "coverage_reward", "DatasetUnavailableError", "DEFAULT_TASK",
    "exact_match_reward", "extract_answer", "fact_counts", "FactCheck",
    "facts_preference_pairs", "FactsConfig", "factuality_reward",
    "make_arithmetic_task", "make_facts_task", "make_gsm8k_task", "make_task",
    "make_word_tokenizer", "make_xsum_task", "SPLITS", "Task", "TaskBatch",
    "TASKS", "TextRewardFn",
]
