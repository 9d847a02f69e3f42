r"""Runs a teacher once over a task's train split and caches what it says.

    python -m gkdrl.runners.cache_teacher --task=facts --teacher=builtin \
        --top_k=64 --out=runs/facts_cache
    python -m gkdrl.runners.train --agent=supervised_kd \
        --teacher_cache=runs/facts_cache

`--mode=top_k` stores the teacher's top-k token ids and log-probabilities
at every target position (for `supervised_kd`); `--mode=samples` one
completion the teacher samples per example (for `seqkd`). The cache is
written in checksummed shards with a manifest (`gkdrl.tasks.teacher_cache`);
rerunning the same command finishes an interrupted cache and keeps its good
shards.
"""

import sys

from absl import app
from absl import flags

from gkdrl.runners import flags_lib
from gkdrl.runners import teacher_cache as cache_lib
from gkdrl.tasks import teacher_cache

# --task, --teacher, --task_seed, --seed (the sampling seed here), ...
flags_lib.define_model_flags()
flags.DEFINE_string("out", None, "The cache directory to write.")
flags.DEFINE_enum("mode", "top_k", list(teacher_cache.MODES),
                  "top_k: top-k log-probabilities per target position "
                  "(supervised_kd); samples: one teacher completion per "
                  "example (seqkd).")
flags.DEFINE_integer("top_k", 64, "Tokens kept per position (mode top_k).")
flags.DEFINE_float("teacher_temperature", 1.0,
                   "Divides the teacher's logits (mode top_k).")
flags.DEFINE_float("sample_temperature", 1.0,
                   "Sampling temperature, 0 greedy (mode samples).")
flags.DEFINE_integer("max_new_tokens", None,
                     "Most tokens per sample (default: the task's longest "
                     "target; mode samples).")
flags.DEFINE_integer("shard_size", 256, "Examples per shard.")
flags.DEFINE_integer("batch_size", 16, "Examples per teacher call.")
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  flags_lib.quiet_logs()
  if not FLAGS.out:
    print("error: --out is required.", file=sys.stderr)
    return 1
  try:
    # An unset --task_seed is --seed, as in train.
    manifest = cache_lib.make_cache(
        task_name=FLAGS.task, out=FLAGS.out, teacher=FLAGS.teacher,
        task_seed=(FLAGS.seed if FLAGS.task_seed is None
                   else FLAGS.task_seed), data_files=FLAGS.data_files, mode=FLAGS.mode, top_k=FLAGS.top_k,
        teacher_temperature=FLAGS.teacher_temperature,
        sample_temperature=FLAGS.sample_temperature,
        max_new_tokens=FLAGS.max_new_tokens, seed=FLAGS.seed,
        shard_size=FLAGS.shard_size, batch_size=FLAGS.batch_size,
        cache_dir=FLAGS.cache_dir, progress=True)
  except (ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(f"{FLAGS.out}: {manifest['identity']['num_examples']} examples in "
        f"{len(manifest['shards'])} shards")
  return 0


if __name__ == "__main__":
  app.run(main)
