"""The `Task` record: data splits, tokenizer, batching and rewards of a task.

Shapes (see gkdrl/types.py): B batch, P prompt length, T target length.

Every task, generated or loaded from the hub, is one `Task` NamedTuple. Its
splits are `datasets.Dataset`s with string columns "source" (the raw
document or question), "prompt" (the source formatted for the model) and
"target" (the reference completion). `Task.batches` turns a split into
`TaskBatch` records of NumPy arrays: prompts LEFT-padded (real tokens at the
right end, ready for generation), targets RIGHT-padded and ending with EOS.
Both lengths are padded up to buckets (powers of two, capped by the task
maximum) so a training run compiles a handful of shapes, not one per batch.
"""

from collections.abc import Callable, Iterator, Mapping, Sequence
import random
from typing import NamedTuple
import warnings

import datasets
import numpy as np
import transformers

from gkdrl import validation

SPLITS = ("train", "validation", "test")
COLUMNS = ("source", "prompt", "target")
MIN_BUCKET = 8
_SENTINEL = "\x00"

# reward_fn(sources, completions, targets) -> [B] float32; all lists of str.
TextRewardFn = Callable[[Sequence[str], Sequence[str], Sequence[str]],
                        np.ndarray]


class TaskBatch(NamedTuple):
  """A batch of prompts and reference targets as NumPy arrays."""

  prompt_tokens: np.ndarray  # [B, P] int32, left-padded with the pad id
  prompt_mask: np.ndarray  # [B, P] bool, True on real prompt tokens
  target_tokens: np.ndarray  # [B, T] int32, right-padded, EOS last valid
  target_mask: np.ndarray  # [B, T] bool, True on target tokens and EOS
  sources: list[str]  # B raw documents / questions
  targets: list[str]  # B reference completions (text, without EOS)


class Task(NamedTuple):
  """One task: data, tokenizer, batching and the rewards that belong to it.

  Attributes:
    name: the registry name ("facts", "arithmetic", "xsum", "gsm8k").
    tokenizer: the `PreTrainedTokenizerBase` that encodes prompts and targets
      (a word-level `PreTrainedTokenizerFast` for the generated tasks).
    splits: "train", "validation" and "test" `datasets.Dataset`s with string
      columns "source", "prompt" and "target" (hub tasks may add "id").
    max_prompt_tokens: P of the largest prompt bucket; longer prompts keep
      their head and their last `prompt_tail_tokens` tokens (the cue after
      the source).
    max_target_tokens: T of the largest target bucket, EOS included; longer
      targets are cut and still end with EOS.
    prompt_buckets: the prompt lengths a batch can have, increasing.
    target_buckets: the target lengths a batch can have, increasing.
    format_prompt: `source -> prompt` text.
    collate: `collate(examples, fixed_shape=False) -> TaskBatch`, where
      `examples` maps "source", "prompt" and "target" to equal-length lists
      (what `dataset[indices]` returns). With `fixed_shape=True` it pads to
      the maxima instead of the buckets.
    batches: `batches(split, batch_size, *, seed=None, num_epochs=1,
      drop_remainder=False, fixed_shape=False, process_index=0,
      process_count=1) -> Iterator[TaskBatch]`. With
      `seed=None` rows come in dataset order; with an int seed every epoch
      is a permutation drawn from (seed, epoch). `num_epochs=None` repeats
      forever. A short last batch of an epoch is kept unless
      `drop_remainder` (it has a smaller B, hence a new shape). With
      `process_index=i, process_count=n` (a multi-host run) `batch_size`
      is the global B and process i gets rows [i * B / n, (i + 1) * B / n)
      of each global batch (bucketed on its own rows: see `pad_batch`).
    reward_fns: name -> `reward_fn(sources, completions, targets)` returning
      `[B]` float32 (see `TextRewardFn`); empty when the task has none.
  """

  name: str
  tokenizer: transformers.PreTrainedTokenizerBase
  splits: Mapping[str, datasets.Dataset]
  max_prompt_tokens: int
  max_target_tokens: int
  prompt_buckets: tuple[int, ...]
  target_buckets: tuple[int, ...]
  format_prompt: Callable[[str], str]
  collate: Callable[..., TaskBatch]
  batches: Callable[..., Iterator[TaskBatch]]
  reward_fns: Mapping[str, TextRewardFn]


def check_int(name: str, value, low: int | None = None,
              high: int | None = None) -> int:
  """Deprecated: use `gkdrl.validation.check_int` (same checks)."""
  warnings.warn("gkdrl.tasks.base.check_int moved to "
                "gkdrl.validation.check_int.", DeprecationWarning,
                stacklevel=2)
  return validation.check_int(name, value, low, high)


def check_positive_int(name: str, value) -> int:
  """Deprecated: use `gkdrl.validation.check_int(name, value, 1)`."""
  warnings.warn("gkdrl.tasks.base.check_positive_int moved to "
                "gkdrl.validation.check_int(name, value, 1).",
                DeprecationWarning, stacklevel=2)
  return validation.check_int(name, value, 1)


def check_same_length(**columns: Sequence[str]) -> int:
  """Returns the common length B of the named lists, else raises."""
  lengths = {name: len(v) for name, v in columns.items()}
  if len(set(lengths.values())) != 1:
    raise ValueError(f"{', '.join(lengths)} must have equal lengths B, got "
                     f"{lengths}")
  return next(iter(lengths.values()))


def bucket_sizes(max_length: int, min_bucket: int = MIN_BUCKET
                 ) -> tuple[int, ...]:
  """Powers of two from `min_bucket` below `max_length`, then `max_length`.

  Args:
    max_length: the largest length; always the last bucket.
    min_bucket: the smallest bucket (a power of two).

  Returns:
    The increasing bucket lengths, e.g. (8, 16, 32, 64, 72) for 72.
  """
  validation.check_int("max_length", max_length, 1)
  validation.check_int("min_bucket", min_bucket, 1)
  buckets = []
  size = min_bucket
  while size < max_length:
    buckets.append(size)
    size *= 2
  buckets.append(max_length)
  return tuple(buckets)


def bucket_length(length: int, buckets: Sequence[int]) -> int:
  """The smallest bucket >= `length`; raises ValueError if none is."""
  for size in buckets:
    if size >= length:
      return size
  raise ValueError(f"length {length} exceeds the largest bucket {buckets[-1]}")


def _fit_prompt(ids: list[int], max_tokens: int, tail: int) -> list[int]:
  if len(ids) <= max_tokens:
    return ids
  # Keep the head of the source (where news leads and questions start) and
  # the cue that follows it ("Summary:"), which the model must still see.
  tail = min(tail, max_tokens)
  return ids[:max_tokens - tail] + ids[len(ids) - tail:]


def pad_token_id(tokenizer: transformers.PreTrainedTokenizerBase) -> int:
  """The id that pads batches: the tokenizer's pad token, else its EOS."""
  if tokenizer.eos_token_id is None:
    raise ValueError("tokenizer must define an eos_token, got None")
  pad_id = tokenizer.pad_token_id
  return tokenizer.eos_token_id if pad_id is None else pad_id


def collate(
    tokenizer: transformers.PreTrainedTokenizerBase,
    examples: Mapping[str, Sequence[str]],
    *,
    prompt_buckets: Sequence[int],
    target_buckets: Sequence[int],
    prompt_tail_tokens: int = 0,
    fixed_shape: bool = False,
) -> TaskBatch:
  """Tokenizes, truncates, pads and buckets prompts and targets.

  Args:
    tokenizer: encodes prompts with its special tokens (e.g. BOS) and targets
      without; its EOS id ends every target; its pad id (EOS if it has none)
      fills padding, which the masks mark invalid.
    examples: "source", "prompt" and "target" -> B strings each.
    prompt_buckets: allowed prompt lengths, increasing; the last is the max.
    target_buckets: allowed target lengths (EOS included), increasing.
    prompt_tail_tokens: how many final prompt tokens survive truncation.
    fixed_shape: pad to the largest buckets regardless of the batch.

  Returns:
    A `TaskBatch` with `prompt_tokens [B, P]` and `target_tokens [B, T]`.
  """
  eos_id = tokenizer.eos_token_id
  pad_id = pad_token_id(tokenizer)
  sources, prompts, targets = (list(examples[c]) for c in COLUMNS)
  if not len(sources) == len(prompts) == len(targets) > 0:
    raise ValueError(
        "examples must hold equal, non-zero numbers of sources, prompts and "
        f"targets, got {len(sources)}, {len(prompts)} and {len(targets)}")
  max_p, max_t = prompt_buckets[-1], target_buckets[-1]
  prompt_ids = [
      _fit_prompt(ids, max_p, prompt_tail_tokens)
      for ids in tokenizer(prompts, add_special_tokens=True)["input_ids"]
  ]
  target_ids = [
      ids[:max_t - 1] + [eos_id]
      for ids in tokenizer(targets, add_special_tokens=False)["input_ids"]
  ]
  if fixed_shape:
    p, t = max_p, max_t
  else:
    p = bucket_length(max(map(len, prompt_ids)), prompt_buckets)
    t = bucket_length(max(map(len, target_ids)), target_buckets)
  b = len(prompts)
  prompt_tokens = np.full((b, p), pad_id, np.int32)  # [B, P]
  prompt_mask = np.zeros((b, p), bool)  # [B, P]
  target_tokens = np.full((b, t), pad_id, np.int32)  # [B, T]
  target_mask = np.zeros((b, t), bool)  # [B, T]
  for i, (pi, ti) in enumerate(zip(prompt_ids, target_ids)):
    prompt_tokens[i, p - len(pi):] = pi
    prompt_mask[i, p - len(pi):] = True
    target_tokens[i, :len(ti)] = ti
    target_mask[i, :len(ti)] = True
  return TaskBatch(prompt_tokens, prompt_mask, target_tokens, target_mask,
                   sources, targets)


def iterate_batches(
    dataset: datasets.Dataset,
    batch_size: int,
    collate_fn: Callable[..., TaskBatch],
    *,
    seed: int | None = None,
    num_epochs: int | None = 1,
    drop_remainder: bool = False,
    fixed_shape: bool = False,
    process_index: int = 0,
    process_count: int = 1,
) -> Iterator[TaskBatch]:
  """Yields `TaskBatch`es over `dataset`; see `Task.batches`.

  With `process_count` > 1 every process draws the same global order (it
  depends only on `seed` and the epoch) and reads and tokenizes only its
  own `batch_size / process_count` rows of each global batch.
  """
  batch_size = validation.check_int("batch_size", batch_size, 1)
  if num_epochs is not None:
    validation.check_int("num_epochs", num_epochs, 1)
  if seed is not None:
    validation.check_int("seed", seed)
  process_count = validation.check_int("process_count", process_count, 1)
  process_index = validation.check_int("process_index", process_index, 0,
                                       process_count - 1)
  if batch_size % process_count:
    raise ValueError(f"batch_size {batch_size} must be a multiple of "
                     f"process_count {process_count} (equal rows per "
                     "process)")
  if process_count > 1 and not drop_remainder:
    raise ValueError(f"process_count {process_count} > 1 needs "
                     "drop_remainder=True (every global batch full, so "
                     "every process gets the same number of rows)")
  n = len(dataset)
  if n == 0 or (drop_remainder and batch_size > n):
    raise ValueError(
        f"batch_size {batch_size} with drop_remainder={drop_remainder} "
        f"yields no batch from a split of {n} rows")
  # Arguments are checked above, when called; batches come lazily.
  return _generate_batches(dataset, batch_size, collate_fn, seed, num_epochs,
                           drop_remainder, fixed_shape, process_index,
                           process_count)


def _generate_batches(dataset, batch_size, collate_fn, seed, num_epochs,
                      drop_remainder, fixed_shape, process_index,
                      process_count):
  n = len(dataset)
  local = batch_size // process_count
  epoch = 0
  while num_epochs is None or epoch < num_epochs:
    order = list(range(n))
    if seed is not None:
      # A str seed is hashed with SHA-512: the same on every platform/run.
      random.Random(f"{seed}:{epoch}").shuffle(order)
    stop = n - n % batch_size if drop_remainder else n
    for start in range(0, stop, batch_size):
      start += process_index * local
      stop_row = min(start + local, stop)
      yield collate_fn(dataset[order[start:stop_row]],
                       fixed_shape=fixed_shape)
    epoch += 1


def pad_batch(batch: TaskBatch, prompt_length: int, target_length: int,
              pad_id: int) -> TaskBatch:
  """Pads a batch to longer prompt and target lengths.

  Prompts gain pad columns on the left, targets on the right, masks False
  there: the batch `collate` would have built with those buckets. Processes
  of a multi-host run bucket their own rows, then pad to the largest
  process's lengths, which is what one process bucketing the whole global
  batch gives (a bucket covers the longest row).

  Args:
    batch: the batch, `prompt_tokens [B, P]` and `target_tokens [B, T]`.
    prompt_length: the new P, >= the batch's.
    target_length: the new T, >= the batch's.
    pad_id: the token id written in new padding.

  Returns:
    The batch with `prompt_tokens [B, prompt_length]` and
    `target_tokens [B, target_length]`.
  """
  p = batch.prompt_tokens.shape[1]
  t = batch.target_tokens.shape[1]
  validation.check_int("prompt_length", prompt_length, p)
  validation.check_int("target_length", target_length, t)
  grow_p, grow_t = ((0, 0), (prompt_length - p, 0)), ((0, 0),
                                                       (0, target_length - t))
  return batch._replace(
      prompt_tokens=np.pad(batch.prompt_tokens, grow_p,
                           constant_values=pad_id),
      prompt_mask=np.pad(batch.prompt_mask, grow_p, constant_values=False),
      target_tokens=np.pad(batch.target_tokens, grow_t,
                           constant_values=pad_id),
      target_mask=np.pad(batch.target_mask, grow_t, constant_values=False))


def build_task(
    name: str,
    tokenizer: transformers.PreTrainedTokenizerBase,
    splits: Mapping[str, datasets.Dataset],
    *,
    prompt_template: str,
    max_prompt_tokens: int,
    max_target_tokens: int,
    reward_fns: Mapping[str, TextRewardFn],
) -> Task:
  """Assembles a `Task` whose batching closes over its tokenizer and splits.

  Args:
    name: the task's name.
    tokenizer: the task's tokenizer (must define eos_token).
    splits: "train", "validation", "test" -> Dataset with `COLUMNS`.
    prompt_template: a format string with one "{source}" field.
    max_prompt_tokens: the largest prompt length P.
    max_target_tokens: the largest target length T, EOS included (>= 2).
    reward_fns: name -> `TextRewardFn`.

  Returns:
    The `Task`.
  """
  check_prompt_template(prompt_template)
  validation.check_int("max_prompt_tokens", max_prompt_tokens, 1)
  if validation.check_int("max_target_tokens", max_target_tokens, 1) < 2:
    raise ValueError(
        f"max_target_tokens must be >= 2 (a token and EOS), got "
        f"{max_target_tokens}")
  if tokenizer.eos_token_id is None:
    raise ValueError("tokenizer must define an eos_token, got None")
  if set(splits) != set(SPLITS):
    raise ValueError(f"splits must be exactly {SPLITS}, got {tuple(splits)}")
  for split, dataset in splits.items():
    missing = [c for c in COLUMNS if c not in dataset.column_names]
    if missing:
      raise ValueError(f"split {split!r} lacks columns {missing}")
  tail = prompt_template.format(source=_SENTINEL).split(_SENTINEL)[1]
  prompt_tail_tokens = len(
      tokenizer(tail, add_special_tokens=False)["input_ids"]) if tail else 0
  prompt_buckets = bucket_sizes(max_prompt_tokens)
  target_buckets = bucket_sizes(max_target_tokens)

  def format_prompt(source: str) -> str:
    return prompt_template.format(source=source)

  def collate_fn(examples, fixed_shape=False):
    return collate(tokenizer, examples, prompt_buckets=prompt_buckets,
                   target_buckets=target_buckets,
                   prompt_tail_tokens=prompt_tail_tokens,
                   fixed_shape=fixed_shape)

  def batches(split, batch_size, **kwargs):
    if split not in splits:
      raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return iterate_batches(splits[split], batch_size, collate_fn, **kwargs)

  return Task(
      name=name, tokenizer=tokenizer, splits=dict(splits),
      max_prompt_tokens=max_prompt_tokens,
      max_target_tokens=max_target_tokens, prompt_buckets=prompt_buckets,
      target_buckets=target_buckets, format_prompt=format_prompt,
      collate=collate_fn, batches=batches, reward_fns=dict(reward_fns))


def check_prompt_template(prompt_template: str) -> str:
  """Returns the template if it has exactly one "{source}" field."""
  try:
    ok = prompt_template.format(source=_SENTINEL).count(_SENTINEL) == 1
  except (AttributeError, IndexError, KeyError, ValueError):
    ok = False
  if not ok:
    raise ValueError(
        "prompt_template must be a str with exactly one '{source}' field and "
        f"no other fields (write literal braces as '{{{{' '}}}}'), got "
        f"{prompt_template!r}")
  return prompt_template
