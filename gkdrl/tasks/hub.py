"""Tasks on Hugging Face datasets: `xsum` and `gsm8k`, from the hub or files.

Each task reads its dataset either from the hub through `datasets` (which
needs network access or a filled cache) or, with `data_files=`, from local
json, jsonl, csv or parquet files with the same columns:

    xsum   document, summary [, id]   (document -> one-sentence summary)
    gsm8k  question, answer           (answer ends with "#### <number>")

`data_files` is a path, a list of paths (one pool of rows, read as "train")
or a dict split -> path(s); globs are allowed. A missing "validation" or
"test" split is carved out of "train" (`holdout_fraction` of it each, drawn
from `seed`), so the three splits are always disjoint. Hub tasks take the
tokenizer of the model being trained.

The data is checked when the task loads (`gkdrl.tasks.data_checks`): a
local file that is empty, not UTF-8 or not JSON where JSON is expected is
named with its line; a row whose source or target is missing, not text or
empty, or (GSM8K) whose answer has no `#### <number>`, is counted and
located, and the task refuses the data or, with `skip_bad_rows=True`, drops
those rows with a warning.
"""

from collections.abc import Callable, Mapping, Sequence
import dataclasses
import glob
import os
import pathlib
import random

import datasets
import transformers

from gkdrl import validation
from gkdrl.tasks import answers
from gkdrl.tasks import base
from gkdrl.tasks import data_checks

_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv",
             ".parquet": "parquet"}


class DatasetUnavailableError(FileNotFoundError):
  """Neither the hub nor local files could supply a task's dataset."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class HubDataset:
  """Where a hub task's data lives and how its columns map to a `Task`.

  Attributes:
    name: the task name.
    path: the dataset's hub repository.
    config_name: the hub configuration, or None.
    revision: the hub branch or commit to read, or None for the default.
    source_column: the column that becomes "source".
    target_column: the column that becomes "target".
    columns: every column the data must have.
    optional_columns: columns kept when every split has them (xsum's id).
    prompt_template: default prompt, one "{source}" field. It ends with a
      newline so that a target tokenized on its own starts as it would
      after the prompt.
    max_prompt_tokens: default largest prompt length.
    max_target_tokens: default largest target length, EOS included.
    reward_fns: the task's built-in rewards.
    check_target: the task's check of a target text, returning what is
      wrong with it or None (GSM8K: a `#### <number>` answer).
  """

  name: str
  path: str
  config_name: str | None
  revision: str | None
  source_column: str
  target_column: str
  columns: tuple[str, ...]
  prompt_template: str
  max_prompt_tokens: int
  max_target_tokens: int
  reward_fns: Mapping[str, base.TextRewardFn]
  optional_columns: tuple[str, ...] = ()
  check_target: Callable[[str], str | None] | None = None


def _gsm8k_answer_problem(answer: str) -> str | None:
  if answers.extract_answer(answer) is None:
    return "'answer' has no '#### <number>' final answer"
  return None


# EdinburghNLP/xsum's main branch holds a loading script, which datasets>=4
# no longer runs; the hub's parquet conversion of it loads everywhere.
XSUM = HubDataset(
    name="xsum", path="EdinburghNLP/xsum", config_name=None,
    revision="refs/convert/parquet",
    source_column="document", target_column="summary",
    columns=("document", "summary"), optional_columns=("id",),
    prompt_template=("Summarize the article in one sentence.\n\n"
                     "Article: {source}\n\nSummary:\n"),
    max_prompt_tokens=512, max_target_tokens=64, reward_fns={})
GSM8K = HubDataset(
    name="gsm8k", path="openai/gsm8k", config_name="main", revision=None,
    source_column="question", target_column="answer",
    columns=("question", "answer"),
    prompt_template="Question: {source}\nAnswer:\n",
    max_prompt_tokens=256, max_target_tokens=256,
    reward_fns={"accuracy": answers.exact_match_reward},
    check_target=_gsm8k_answer_problem)


def _expected(spec: HubDataset) -> str:
  return (
      f"pass data_files= a path, a list of paths, or a dict split -> path(s) "
      f"of json, jsonl, csv or parquet files with columns "
      f"{list(spec.columns)}"
      + (f" (optionally {list(spec.optional_columns)})"
         if spec.optional_columns else "")
      + f" (splits {list(base.SPLITS)}; a missing "
      f"validation or test split is carved out of train)")


def _normalise_files(spec: HubDataset, data_files) -> dict[str, list[str]]:
  if isinstance(data_files, (str, os.PathLike)):
    data_files = {"train": [data_files]}
  elif isinstance(data_files, Sequence):
    data_files = {"train": list(data_files)}
  elif not isinstance(data_files, Mapping):
    raise ValueError(f"{spec.name}: data_files must be a path, a list of "
                     f"paths or a dict split -> path(s), got {data_files!r}")
  files = {}
  for split, paths in data_files.items():
    if split not in base.SPLITS:
      raise ValueError(f"{spec.name}: data_files split must be one of "
                       f"{base.SPLITS}, got {split!r}")
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    files[split] = [os.fspath(p) for p in paths]
  if "train" not in files:
    raise ValueError(f"{spec.name}: data_files needs a 'train' split, got "
                     f"{sorted(files)}")
  return files


def _load_files(spec: HubDataset, files: dict[str, list[str]], cache_dir
                ) -> tuple[dict[str, datasets.Dataset], dict]:
  """The splits of local files, and the file line of each JSON record."""
  every = [p for paths in files.values() for p in paths]
  missing = [p for p in every if not glob.glob(p)]
  if missing or not every:
    raise DatasetUnavailableError(
        f"{spec.name}: local data files not found: {missing or every}; "
        f"{_expected(spec)}")
  suffixes = {pathlib.Path(p).suffix.lower() for p in every}
  builders = {_BUILDERS.get(s) for s in suffixes}
  if len(builders) != 1 or None in builders:
    raise ValueError(
        f"{spec.name}: data_files must all be one of the formats "
        f"{sorted(_BUILDERS)}, got suffixes {sorted(suffixes)}")
  builder = builders.pop()
  record_lines = data_checks.check_files(files, builder, spec.columns)
  try:
    loaded = datasets.load_dataset(builder, data_files=files,
                                   cache_dir=cache_dir)
  except Exception as e:  # pylint: disable=broad-except
    # datasets wraps a reader's error in DatasetGenerationError (or lets
    # pyarrow's through); say which files, whatever the type.
    cause = e.__cause__ or e
    raise ValueError(
        f"{spec.name}: could not read the {builder} files {every} "
        f"({type(cause).__name__}: {cause}); {_expected(spec)}.") from e
  return dict(loaded), record_lines


def _load_hub(spec: HubDataset, path: str, config_name, revision, cache_dir
              ) -> dict[str, datasets.Dataset]:
  try:
    loaded = datasets.load_dataset(path, config_name, revision=revision,
                                   cache_dir=cache_dir)
  except Exception as e:  # pylint: disable=broad-except
    # Offline mode, no network, a missing repository and a broken cache all
    # surface as different exception types; the remedy is the same.
    raise DatasetUnavailableError(
        f"{spec.name}: could not load {path!r} (config {config_name!r}, "
        f"revision {revision!r}) from the Hugging Face hub or its cache "
        f"({type(e).__name__}: {e}). To work offline, {_expected(spec)}."
    ) from e
  return {s: loaded[s] for s in base.SPLITS if s in loaded}


def _carve(splits, spec, seed, holdout_fraction):
  """Fills a missing validation / test split with rows drawn from train."""
  missing = [s for s in ("validation", "test") if s not in splits]
  if not missing:
    return splits
  train = splits["train"]
  size = max(1, round(holdout_fraction * len(train)))
  if len(train) <= size * len(missing):
    raise ValueError(
        f"{spec.name}: train has {len(train)} rows, too few to carve "
        f"{missing} of {size} rows each out of it")
  order = list(range(len(train)))
  random.Random(f"{spec.name}:holdout:{seed}").shuffle(order)
  for i, split in enumerate(missing):
    splits[split] = train.select(sorted(order[i * size:(i + 1) * size]))
  splits["train"] = train.select(sorted(order[len(missing) * size:]))
  return splits


def make_hub_task(
    spec: HubDataset,
    tokenizer: transformers.PreTrainedTokenizerBase,
    *,
    data_files=None,
    path: str | None = None,
    config_name: str | None = None,
    revision: str | None = None,
    cache_dir: str | None = None,
    seed: int = 0,
    holdout_fraction: float = 0.05,
    num_train: int | None = None,
    num_validation: int | None = None,
    num_test: int | None = None,
    max_prompt_tokens: int | None = None,
    max_target_tokens: int | None = None,
    prompt_template: str | None = None,
    skip_bad_rows: bool = False,
) -> base.Task:
  """Builds a task from a hub dataset or from local files.

  Args:
    spec: the dataset (`XSUM`, `GSM8K`).
    tokenizer: the tokenizer of the model being trained (must define EOS).
    data_files: local files (see the module docstring); None loads the hub.
    path: hub repository instead of `spec.path`.
    config_name: hub configuration instead of `spec.config_name`.
    revision: hub branch or commit instead of `spec.revision`.
    cache_dir: `datasets` cache directory; None for its default.
    seed: draws the rows carved out of train for missing splits.
    holdout_fraction: fraction of train per carved split, in (0, 0.5).
    num_train: keep the first this many training rows; None keeps all.
    num_validation: likewise for validation.
    num_test: likewise for test.
    max_prompt_tokens: largest prompt length; default `spec`'s.
    max_target_tokens: largest target length; default `spec`'s.
    prompt_template: prompt with one "{source}" field; default `spec`'s.
    skip_bad_rows: drop the rows the data checks find bad (with a warning
      giving their count) instead of refusing the data (see the module
      docstring).

  Returns:
    The `Task`; splits have columns source, prompt, target (and id if the
    data has it).

  Raises:
    DatasetUnavailableError: neither the hub nor the files supply the data.
    ValueError: bad arguments, unreadable files, data without the
      expected columns, or bad rows (without `skip_bad_rows`).
  """
  if not isinstance(tokenizer, transformers.PreTrainedTokenizerBase):
    raise ValueError(f"{spec.name}: tokenizer must be a transformers "
                     f"tokenizer, got {type(tokenizer).__name__}")
  if not 0 < holdout_fraction < 0.5:
    raise ValueError(
        f"holdout_fraction must be in (0, 0.5), got {holdout_fraction!r}")
  template = base.check_prompt_template(
      spec.prompt_template if prompt_template is None else prompt_template)
  limits = {"train": num_train, "validation": num_validation,
            "test": num_test}
  for split, limit in limits.items():
    if limit is not None:
      validation.check_int(f"num_{split}", limit, 1)
  files = record_lines = None
  if data_files is None:
    splits = _load_hub(spec, path or spec.path,
                       config_name or spec.config_name,
                       revision or spec.revision, cache_dir)
    where = f"hub dataset {path or spec.path!r}"
  else:
    files = _normalise_files(spec, data_files)
    splits, record_lines = _load_files(spec, files, cache_dir)
    where = f"files {data_files!r}"
  if "train" not in splits:
    raise DatasetUnavailableError(
        f"{spec.name}: {where} has no train split; {_expected(spec)}")
  for split, dataset in splits.items():
    missing = [c for c in spec.columns if c not in dataset.column_names]
    if missing:
      raise ValueError(
          f"{spec.name}: split {split!r} of {where} lacks columns {missing}: "
          f"expected {list(spec.columns)}, found {dataset.column_names}")
  splits = data_checks.check_rows(
      spec.name, splits, source=spec.source_column,
      target=spec.target_column, check_target=spec.check_target,
      skip_bad_rows=skip_bad_rows, files=files, record_lines=record_lines,
      where=where)
  splits = _carve(splits, spec, seed, holdout_fraction)

  out_columns = base.COLUMNS + tuple(
      c for c in spec.optional_columns
      if all(c in d.column_names for d in splits.values()))
  # Explicit string features: without them an "id" read as int64 from csv
  # would keep its old type.
  features = datasets.Features(
      {c: datasets.Value("string") for c in out_columns})

  def to_task_columns(batch):
    text = lambda c: ["" if v is None else str(v) for v in batch[c]]
    sources = text(spec.source_column)
    columns = {"source": sources,
               "prompt": [template.format(source=s) for s in sources],
               "target": text(spec.target_column)}
    if "id" in out_columns:
      columns["id"] = text("id")
    return columns

  task_splits = {}
  for split in base.SPLITS:
    dataset = splits[split]
    if limits[split] is not None:
      dataset = dataset.select(range(min(limits[split], len(dataset))))
    task_splits[split] = dataset.map(
        to_task_columns, batched=True, remove_columns=dataset.column_names,
        features=features)
  return base.build_task(
      spec.name, tokenizer, task_splits, prompt_template=template,
      max_prompt_tokens=(spec.max_prompt_tokens if max_prompt_tokens is None
                         else max_prompt_tokens),
      max_target_tokens=(spec.max_target_tokens if max_target_tokens is None
                         else max_target_tokens),
      reward_fns=spec.reward_fns)


def make_xsum_task(tokenizer: transformers.PreTrainedTokenizerBase,
                   **kwargs) -> base.Task:
  """The `xsum` task (no built-in reward); kwargs as in `make_hub_task`."""
  return make_hub_task(XSUM, tokenizer, **kwargs)


def make_gsm8k_task(tokenizer: transformers.PreTrainedTokenizerBase,
                    **kwargs) -> base.Task:
  """The `gsm8k` task (reward "accuracy"); kwargs as in `make_hub_task`."""
  return make_hub_task(GSM8K, tokenizer, **kwargs)
