"""Each process's rows of the data, and global batches built from them.

In a multi-host run every process reads only its rows of each global batch
(`process_split` for `Task.batches`), pads them to the lengths every process
agrees on, and contributes them to one global array sharded over the batch
axes (`jax.make_array_from_process_local_data`):

    batches = task.batches("train", B, seed=0, num_epochs=None,
                           drop_remainder=True, **parallel.process_split())
    task_batch = parallel.global_task_batch(next(batches), mesh, pad_id)

Texts (`sources`, `targets`) stay process-local lists: host reward models
score this process's rows only, read with `host_local`. In a single process
all of this reduces to placing the whole batch on the mesh. `gather` is the
way back to whole arrays on every process (evaluation, saving a model).
"""

from typing import Any

import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import numpy as np

from gkdrl.tasks import base as tasks_base
from gkdrl.parallel import sharding as sharding_lib

_ARRAY_FIELDS = ("prompt_tokens", "prompt_mask", "target_tokens",
                 "target_mask")


def process_split() -> dict[str, int]:
  """`process_index` and `process_count` for `Task.batches`.

  Returns:
    `{}` in a single process (so any task's `batches` accepts it), else
    this process's index and the process count.
  """
  if jax.process_count() == 1:
    return {}
  return {"process_index": jax.process_index(),
          "process_count": jax.process_count()}


def common_lengths(task_batch: tasks_base.TaskBatch) -> tuple[int, int]:
  """The largest prompt and target lengths over all processes.

  Every process buckets its own rows, so their lengths can differ; the
  largest of each is the bucket of the whole global batch. One small
  all-gather of two ints per call in a multi-process run (every process
  must call it, step for step); no communication in a single process.

  Args:
    task_batch: this process's rows, `prompt_tokens [B_local, P]` and
      `target_tokens [B_local, T]`.

  Returns:
    `(P, T)`, the same on every process.
  """
  lengths = np.asarray([task_batch.prompt_tokens.shape[1],
                        task_batch.target_tokens.shape[1]], np.int32)
  if jax.process_count() > 1:
    lengths = np.asarray(multihost_utils.process_allgather(lengths))
    lengths = lengths.reshape(-1, 2).max(axis=0)
  return int(lengths[0]), int(lengths[1])


def global_task_batch(task_batch: tasks_base.TaskBatch,
                      mesh: jax.sharding.Mesh,
                      pad_id: int) -> tasks_base.TaskBatch:
  """A task batch whose arrays are global arrays split by rows on `mesh`.

  The sampler and the dataset path then start from prompts already sharded
  over the batch axes ("data", "fsdp"), the layout the update expects.

  Args:
    task_batch: this process's rows (the whole batch in a single process)
      as NumPy arrays.
    mesh: the mesh.
    pad_id: the pad token id (`gkdrl.tasks.base.pad_token_id`).

  Returns:
    The `TaskBatch` with `prompt_tokens [B, P]`, `prompt_mask`,
    `target_tokens [B, T]` and `target_mask` as `jax.Array`s of the global
    batch (B = B_local * process count, P and T from `common_lengths`);
    `sources` and `targets` are this process's texts, unchanged.
  """
  prompt_length, target_length = common_lengths(task_batch)
  task_batch = tasks_base.pad_batch(task_batch, prompt_length, target_length,
                                    pad_id)
  arrays = {f: np.asarray(getattr(task_batch, f)) for f in _ARRAY_FIELDS}
  return task_batch._replace(**sharding_lib.shard_batch(arrays, mesh))


def host_local(x: Any) -> np.ndarray:
  """This process's rows of a batch-sharded array, as NumPy.

  The whole array in a single process (or when `x` is not a global
  `jax.Array`); in a multi-process run, the rows held by this process's
  devices in row order, replicas counted once: the rows this process
  contributed to `shard_batch` or `global_task_batch`.

  Args:
    x: an array whose leading axis is the batch.

  Returns:
    `[B_local, ...]` NumPy array.
  """
  if not isinstance(x, jax.Array) or x.is_fully_addressable:
    return np.asarray(x)
  blocks = {}
  for shard in x.addressable_shards:
    rows = shard.index[0] if shard.index else slice(None)
    start = rows.start or 0
    if start not in blocks:
      blocks[start] = np.asarray(shard.data)
  return np.concatenate([blocks[k] for k in sorted(blocks)], axis=0)


def gather(tree: Any) -> Any:
  """The global arrays of `tree` whole, as NumPy, on every process.

  In a multi-process run a global `jax.Array` that this process does not
  hold entirely (e.g. fsdp-sharded parameters) is all-gathered
  (`multihost_utils.process_allgather`); every process must call this
  together, with the same tree. Every other leaf (NumPy, Python numbers,
  arrays this process holds whole) is returned unchanged, so in a single
  process `tree` comes back as it is, with no communication.

  Args:
    tree: a pytree of arrays.

  Returns:
    `tree` with each non-fully-addressable array replaced by its whole
    value as NumPy (the same on every process).
  """
  def whole(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      return multihost_utils.process_allgather(x, tiled=True)
    return x
  return jax.tree.map(whole, tree)


def from_host_local(values: Any, like: jax.Array) -> jax.Array:
  """Per-row values computed on the host, as rows of `like`'s batch.

  The inverse of `host_local`: host reward models score this process's
  rows (`host_local` of the completions) and this puts their `[B_local]`
  rewards back as one global `[B]` array split by rows like `like`.

  Args:
    values: `[B_local, ...]` this process's rows.
    like: a global array `[B, ...]` split by rows (e.g. the completions).

  Returns:
    `[B, ...]` on `like`'s devices, rows split over `like`'s batch axes; in
    a single process (or when `like` is not a global array) simply `values`
    as a `jax.Array`.
  """
  values = np.asarray(values)
  if not isinstance(like, jax.Array) or like.is_fully_addressable:
    return jnp.asarray(values)
  spec = like.sharding.spec
  rows = jax.sharding.NamedSharding(like.sharding.mesh,
                                    jax.sharding.PartitionSpec(
                                        spec[0] if spec else None))
  return jax.make_array_from_process_local_data(rows, values)
