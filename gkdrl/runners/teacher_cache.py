"""Building an offline teacher cache from the runners' names of things.

`make_cache` resolves the task and the teacher the way `train` does, runs
the teacher over the task's train split and writes the cache
(`gkdrl.tasks.teacher_cache`); `gkdrl.runners.cache_teacher` is its
command line.
"""

import jax

from gkdrl import agents
from gkdrl import networks
from gkdrl import validation
from gkdrl.agents import cached_teacher
from gkdrl.runners import builtin
from gkdrl.runners import setup
from gkdrl.tasks import teacher_cache


def make_cache(*, task_name: str, out: str, teacher: str = builtin.BUILTIN,
               task_seed: int = 0, data_files=None, mode: str = "top_k", top_k: int = 64,
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
    task, task_kwargs = setup.make_task(task_name, data_files=data_files,
                                        model_path=teacher, seed=task_seed)
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
  """`teacher_cache.run_identity`, the seed counting for generated tasks."""
  seed = task_seed if task_name in setup.GENERATED_TASKS else None
  return teacher_cache.run_identity(task, task_name, seed, teacher)
