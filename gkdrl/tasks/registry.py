"""`make_task(name, **kwargs)`: every task by name."""

from collections.abc import Callable

from gkdrl.tasks import arithmetic
from gkdrl.tasks import base
from gkdrl.tasks import facts
from gkdrl.tasks import hub

# name -> factory; generated tasks take their config fields as kwargs, hub
# tasks a `tokenizer` and the arguments of `hub.make_hub_task`.
TASKS: dict[str, Callable[..., base.Task]] = {
    "facts": facts.make_facts_task,
    "arithmetic": arithmetic.make_arithmetic_task,
    "xsum": hub.make_xsum_task,
    "gsm8k": hub.make_gsm8k_task,
}
DEFAULT_TASK = "facts"


def make_task(name: str = DEFAULT_TASK, **kwargs) -> base.Task:
  """Builds the task called `name`.

  Args:
    name: one of "facts" (the default), "arithmetic", "xsum", "gsm8k".
    **kwargs: the task's arguments, e.g. `num_train=1000, seed=1` for the
      generated tasks, `tokenizer=..., data_files=...` for the hub tasks.

  Returns:
    The `Task`.

  Raises:
    ValueError: for an unknown name, listing the valid ones.
  """
  if name not in TASKS:
    raise ValueError(f"task name must be one of {sorted(TASKS)}, got {name!r}")
  return TASKS[name](**kwargs)
