"""Each process's rows of the data, and global batches built from them.

Two processes are simulated by reading the task with process_index 0 and 1:
their rows must be disjoint, together make up the batch one process reads,
and once padded to their common lengths equal it array for array.
"""

import itertools

import datasets
import jax
import numpy as np
import pytest

from gkdrl import parallel
from gkdrl.tasks import base
from gkdrl.tasks import word_tokenizer

WORDS = [f"w{i}" for i in range(40)] + ["q", ":", "a"]
TEMPLATE = "q : {source} a :"
BATCH = 8


def _rows(n):
  # Lengths vary with the row so the two halves of a batch bucket apart.
  sources = [" ".join(f"w{(3 * i + j) % 40}" for j in range(1 + (i * 7) % 19))
             for i in range(n)]
  targets = [" ".join(f"w{(i + j) % 40}" for j in range(1 + (i * 5) % 13))
             for i in range(n)]
  return {"source": sources, "target": targets,
          "prompt": [TEMPLATE.format(source=s) for s in sources]}


@pytest.fixture(scope="module")
def task():
  tokenizer = word_tokenizer.make_word_tokenizer(WORDS)
  splits = {"train": datasets.Dataset.from_dict(_rows(43)),
            "validation": datasets.Dataset.from_dict(_rows(4)),
            "test": datasets.Dataset.from_dict(_rows(4))}
  return base.build_task("toy", tokenizer, splits, prompt_template=TEMPLATE,
                         max_prompt_tokens=32, max_target_tokens=16,
                         reward_fns={})


def _batches(task, **kwargs):
  # 43 rows, 8 per batch: 5 batches an epoch; 12 batches cross two epochs.
  return list(itertools.islice(task.batches(
      "train", BATCH, seed=3, num_epochs=None, drop_remainder=True,
      **kwargs), 12))


def test_processes_split_each_global_batch_into_disjoint_rows(task):
  whole = _batches(task)
  parts = [_batches(task, process_index=i, process_count=2) for i in (0, 1)]
  pad_id = base.pad_token_id(task.tokenizer)
  shapes_differ = 0
  for step, (one, p0, p1) in enumerate(zip(whole, *parts)):
    assert len(p0.sources) == len(p1.sources) == BATCH // 2
    assert p0.sources + p1.sources == one.sources, step
    assert p0.targets + p1.targets == one.targets, step
    # Distinct rows (sources are unique here), none shared between processes.
    assert not set(p0.sources) & set(p1.sources)
    shapes_differ += (p0.prompt_tokens.shape != p1.prompt_tokens.shape
                      or p0.target_tokens.shape != p1.target_tokens.shape)
    p = max(p0.prompt_tokens.shape[1], p1.prompt_tokens.shape[1])
    t = max(p0.target_tokens.shape[1], p1.target_tokens.shape[1])
    # The largest process's buckets are the global batch's buckets.
    assert (p, t) == (one.prompt_tokens.shape[1], one.target_tokens.shape[1])
    padded = [base.pad_batch(x, p, t, pad_id) for x in (p0, p1)]
    for field in ("prompt_tokens", "prompt_mask", "target_tokens",
                  "target_mask"):
      np.testing.assert_array_equal(
          np.concatenate([getattr(x, field) for x in padded]),
          getattr(one, field), err_msg=f"{field} at step {step}")
  # The padding path was exercised, not only equal shapes.
  assert shapes_differ > 0


def test_four_processes_cover_the_batch(task):
  whole = _batches(task)
  parts = [_batches(task, process_index=i, process_count=4)
           for i in range(4)]
  for one, *rows in zip(whole, *parts):
    assert sum((r.sources for r in rows), []) == one.sources


@pytest.mark.parametrize("kwargs, match", [
    (dict(process_index=0, process_count=3), "multiple of process_count"),
    (dict(process_index=2, process_count=2), "process_index"),
    (dict(process_index=0, process_count=0), "process_count"),
    (dict(process_index=0, process_count=2, drop_remainder=False),
     "drop_remainder"),
])
def test_process_split_rejects_bad_arguments(task, kwargs, match):
  kwargs = {"drop_remainder": True, **kwargs}
  with pytest.raises(ValueError, match=match):
    task.batches("train", BATCH, seed=0, **kwargs)


def test_pad_batch_rejects_shrinking(task):
  batch = next(task.batches("train", 4))
  p = batch.prompt_tokens.shape[1]
  with pytest.raises(ValueError, match="prompt_length"):
    base.pad_batch(batch, p - 1, batch.target_tokens.shape[1], 0)


def test_single_process_helpers(task):
  assert jax.process_count() == 1
  assert not parallel.process_split()
  batch = next(task.batches("train", 4))
  assert parallel.common_lengths(batch) == (batch.prompt_tokens.shape[1],
                                            batch.target_tokens.shape[1])
  mesh = parallel.make_mesh("auto")
  placed = parallel.global_task_batch(batch, mesh,
                                      base.pad_token_id(task.tokenizer))
  assert placed.sources == batch.sources
  for field in ("prompt_tokens", "prompt_mask", "target_tokens",
                "target_mask"):
    x = getattr(placed, field)
    assert isinstance(x, jax.Array)
    assert x.sharding.is_equivalent_to(parallel.batch_sharding(mesh), x.ndim)
    np.testing.assert_array_equal(parallel.host_local(x),
                                  getattr(batch, field))
  rewards = parallel.from_host_local(np.arange(4.0), placed.prompt_tokens)
  np.testing.assert_array_equal(np.asarray(rewards), np.arange(4.0))


def test_gather_returns_a_single_process_tree_unchanged():
  tree = {"w": jax.numpy.arange(6.0).reshape(2, 3), "n": np.ones(2), "k": 3}
  gathered = parallel.gather(tree)
  assert jax.tree.structure(gathered) == jax.tree.structure(tree)
  for before, after in zip(jax.tree.leaves(tree), jax.tree.leaves(gathered)):
    assert after is before
