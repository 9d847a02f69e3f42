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
import jax

from gkdrl import agents
from gkdrl import networks
from gkdrl import validation
from gkdrl.agents import cached_teacher
from gkdrl.runners import builtin
from gkdrl.runners import flags_lib
from gkdrl.runners import setup
from gkdrl.tasks import teacher_cache

flags.DEFINE_string("task", "facts", "The task whose train split is cached.")
flags.DEFINE_integer("task_seed", 0, "Seed of a generated task's data.")
flags.DEFINE_string("teacher", builtin.BUILTIN,
                    "'builtin' or a local Hugging Face directory / .gguf.")
flags.DEFINE_string("cache_dir", None, "Cache of built-in models.")
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
flags.DEFINE_integer("seed", 0, "Sampling seed (mode samples).")
flags.DEFINE_integer("shard_size", 256, "Examples per shard.")
flags.DEFINE_integer("batch_size", 16, "Examples per teacher call.")
FLAGS = flags.FLAGS


def make_cache(*, task_name: str, out: str, teacher: str = builtin.BUILTIN,
               task_seed: int = 0, mode: str = "top_k", top_k: int = 64,
               teacher_temperature: float = 1.0,
               sample_temperature: float = 1.0,
               max_new_tokens: int | None = None, seed: int = 0,
               shard_size: int = 256, batch_size: int = 16,
               cache_dir: str | None = None, progress: bool = False,
               task=None) -> dict:
  """Builds (or completes) the teacher cache `out`; returns its manifest.

  `task` may be given ready-made (with `task_name`, `task_seed` naming it).
  """
  validation.check_choice("mode", mode, teacher_cache.MODES)
  validation.check_int("top_k", top_k, 1)
  validation.check_positive("teacher_temperature", teacher_temperature)
  task_kwargs = {"seed": task_seed}
  if task is None:
    task, task_kwargs = setup.make_task(task_name, model_path=teacher,
                                        seed=task_seed)
  path = setup.resolve_model_path(teacher, "teacher", task, task_name,
                                  task_kwargs, cache_dir, progress)
  model, params = networks.from_pretrained(path)
  if top_k > model.config.vocab_size:
    validation.fail("top_k", top_k, f"at most the teacher's vocab_size "
                    f"{model.config.vocab_size}")
  identity = run_identity(task, task_name, task_seed, teacher) | {
      "mode": mode,
      "teacher_config": teacher_cache.config_fingerprint(model.config)}
  if mode == "top_k":
    identity |= {"top_k": top_k, "teacher_temperature": teacher_temperature}
    fn = cached_teacher.teacher_top_k(model, top_k,
                                      temperature=teacher_temperature)
    compute = lambda task_batch: cached_teacher.top_k_rows(  # noqa: E731
        fn, params, task_batch)
  else:
    max_new_tokens = max_new_tokens or task.max_target_tokens
    identity |= {"sample_temperature": sample_temperature,
                 "max_new_tokens": max_new_tokens, "seed": seed}
    config = agents.SeqKDConfig(max_new_tokens=max_new_tokens,
                                sample_temperature=sample_temperature)
    eos, pad = agents.special_token_ids(task.tokenizer, model)
    key = jax.random.key(seed)

    def compute(task_batch):
      # One key per batch content: a redone shard draws the same samples.
      digest = teacher_cache.example_key(task_batch.sources[0],
                                         task_batch.targets[0])
      batch_key = jax.random.fold_in(key, int(digest[:8], 16))
      return cached_teacher.sample_rows(
          model, params, task_batch, batch_key, config=config,
          eos_token_id=eos, pad_token_id=pad)

  return teacher_cache.build(compute, task, out, identity=identity,
                             shard_size=shard_size, batch_size=batch_size,
                             progress=progress)


def run_identity(task, task_name: str, task_seed, teacher: str) -> dict:
  """What a run and its cache must agree on: task, seed, tokenizer, teacher.

  `task_seed` counts for generated tasks only (hub data has no seed).
  """
  return {"task": task_name,
          "task_seed": task_seed if task_name in setup.GENERATED_TASKS
          else None,
          "tokenizer": teacher_cache.tokenizer_fingerprint(task.tokenizer),
          "teacher": teacher}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  flags_lib.quiet_logs()
  if not FLAGS.out:
    print("error: --out is required.", file=sys.stderr)
    return 1
  try:
    manifest = make_cache(
        task_name=FLAGS.task, out=FLAGS.out, teacher=FLAGS.teacher,
        task_seed=FLAGS.task_seed, mode=FLAGS.mode, top_k=FLAGS.top_k,
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
