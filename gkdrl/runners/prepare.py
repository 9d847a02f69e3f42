r"""Builds (or finds) the built-in teacher and student of a built-in task.

    python -m gkdrl.runners.prepare --task=facts

Supervised fine-tunes both on the task's train split once and caches them as
Hugging Face directories (see `gkdrl.runners.builtin`); prints their paths.
`train` does this by itself when --teacher/--student are 'builtin'.
"""


from absl import app
from absl import flags

from gkdrl.runners import builtin
from gkdrl.runners import flags_lib
from gkdrl.runners import setup

flags.DEFINE_enum("task", "facts", list(setup.GENERATED_TASKS),
                  "Built-in task.")
flags.DEFINE_integer("seed", 0, "Task data seed.")
flags.DEFINE_string("cache_dir", None,
                    "Cache root (default $GKDRL_CACHE_DIR or ~/.cache/gkdrl).")
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  flags_lib.quiet_logs()
  task, task_kwargs = setup.make_task(FLAGS.task, seed=FLAGS.seed)
  for role in builtin.ROLES:
    path = builtin.prepare_builtin_model(task, FLAGS.task, role,
                                         task_kwargs=task_kwargs,
                                         cache_dir=FLAGS.cache_dir)
    print(f"{role}\t{path}")
  return 0


if __name__ == "__main__":
  app.run(main)
