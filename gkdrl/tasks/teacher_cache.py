"""An offline teacher cache: the teacher run once over a task's train split.

    manifest = teacher_cache.build(teacher, teacher_params, task, out_dir,
                                   top_k=64, identity={...})
    cache = teacher_cache.open_cache(out_dir, expected={...})
    top_ids, top_logp = cache.top_k(task_batch)  # [B, T, K] each

A cache directory holds `manifest.json` and shards `shard_00000.npz`, ...
of `shard_size` examples each, in the split's dataset order. Each example
is keyed by the SHA-256 of its (source, target) text, so a lookup does not
depend on the order, batching or padding the training run draws; the
manifest lists each complete shard with its SHA-256.

Modes:
  "top_k": per target position (EOS included) the teacher's `top_k` token
    ids and their log-probabilities (at `teacher_temperature`), for
    supervised KD.
  "samples": one completion sampled by the teacher per example (its
    tokens, EOS included), for SeqKD.

Building is resumable: a shard listed in the manifest whose file has the
listed checksum is kept; any other shard (missing, partial, corrupt) is
computed again. Loading checks every shard's checksum and refuses a cache
whose identity (task, task seed, tokenizer, teacher, mode, k, temperature)
differs from what the run expects, naming each difference.
"""

from collections.abc import Iterator, Mapping
import hashlib
import json
import os
import pathlib
from typing import Any

import numpy as np

from gkdrl import validation
from gkdrl.tasks import base

MANIFEST = "manifest.json"
MODES = ("top_k", "samples")
FORMAT_VERSION = 1


def example_key(source: str, target: str) -> str:
  """The stable key of one example: SHA-256 of its source and target."""
  text = json.dumps([source, target], ensure_ascii=False)
  return hashlib.sha256(text.encode("utf-8")).hexdigest()


def tokenizer_fingerprint(tokenizer) -> str:
  """SHA-256 of a tokenizer's vocabulary, special tokens and pipeline."""
  backend = getattr(tokenizer, "backend_tokenizer", None)
  parts = [backend.to_str() if backend is not None
           else json.dumps(sorted(tokenizer.get_vocab().items())),
           repr((tokenizer.bos_token_id, tokenizer.eos_token_id,
                 tokenizer.pad_token_id, len(tokenizer)))]
  return hashlib.sha256("\n".join(parts).encode("utf-8")).hexdigest()


def tokenizer_identity(tokenizer) -> dict[str, str]:
  """{"tokenizer": fingerprint}, or {} without a tokenizer to check."""
  return {} if tokenizer is None else {
      "tokenizer": tokenizer_fingerprint(tokenizer)}


def run_identity(task, task_name: str, task_seed: int | None,
                 teacher: str) -> dict[str, Any]:
  """What a training run and its cache must agree on.

  Args:
    task: the `Task` (its tokenizer is fingerprinted).
    task_name: its registry name.
    task_seed: the seed of its data; None for data without one (hub).
    teacher: the teacher as the runners name it ('builtin' or a path).
  """
  return {"task": task_name, "task_seed": task_seed,
          "tokenizer": tokenizer_fingerprint(task.tokenizer),
          "teacher": teacher}


def config_fingerprint(model_config) -> str:
  """SHA-256 of a model config's repr (a frozen dataclass)."""
  return hashlib.sha256(repr(model_config).encode("utf-8")).hexdigest()


def file_sha256(path: pathlib.Path) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def _write_json(path: pathlib.Path, value) -> None:
  tmp = path.with_suffix(".tmp")
  tmp.write_text(json.dumps(value, indent=1, sort_keys=True))
  os.replace(tmp, path)


def _shard_name(index: int) -> str:
  return f"shard_{index:05d}.npz"


def _check_identity(found: Mapping[str, Any], expected: Mapping[str, Any],
                    where: str) -> None:
  """Raises naming every key of `expected` whose value `found` differs in."""
  differ = [f"{k}: cache has {found.get(k)!r}, expected {v!r}"
            for k, v in expected.items() if found.get(k) != v]
  if differ:
    raise ValueError(f"teacher cache {where} was built for another setup "
                     f"({'; '.join(differ)}); build a cache for this run "
                     "with gkdrl.runners.cache_teacher.")


def _examples(split, shard_size: int, shard: int) -> dict[str, list[str]]:
  stop = min(len(split), (shard + 1) * shard_size)
  return split[shard * shard_size:stop]


def build(compute, task, out_dir, *, identity: Mapping[str, Any],
          shard_size: int = 256, batch_size: int = 16,
          progress: bool = False) -> dict[str, Any]:
  """Writes (or completes) a cache of `compute` over `task`'s train split.

  Args:
    compute: `compute(task_batch) -> list of per-example dicts of NumPy
      arrays` ("tokens" [T_i] and, in top_k mode, "ids" and "logp"
      [T_i, K]); see `gkdrl.runners.cache_teacher`.
    task: the `Task`; its "train" split is cached in dataset order.
    out_dir: the cache directory (created).
    identity: what the cache was built for: "mode", "task", "task_seed",
      "tokenizer", "teacher", "teacher_config", "top_k",
      "teacher_temperature" (stored in the manifest, checked at load).
    shard_size: examples per shard, >= 1.
    batch_size: examples per teacher call, >= 1.
    progress: log each shard written.

  Returns:
    The manifest.
  """
  validation.check_int("shard_size", shard_size, 1)
  validation.check_int("batch_size", batch_size, 1)
  validation.check_choice("mode", identity["mode"], MODES)
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  split = task.splits["train"]
  identity = {**identity, "num_examples": len(split),
              "shard_size": shard_size, "format": FORMAT_VERSION}
  manifest_path = out / MANIFEST
  shards = {}
  if manifest_path.exists():
    old = json.loads(manifest_path.read_text())
    _check_identity(old["identity"], identity, str(out))
    shards = old["shards"]
  num_shards = -(-len(split) // shard_size)
  for shard in range(num_shards):
    name = _shard_name(shard)
    listed = shards.get(name)
    if listed and (out / name).exists() and (
        file_sha256(out / name) == listed["sha256"]):
      continue
    examples = _examples(split, shard_size, shard)
    arrays = _shard_arrays(compute, task, examples, batch_size)
    tmp = out / (name + ".partial")
    with open(tmp, "wb") as f:
      np.savez(f, **arrays)
    os.replace(tmp, out / name)
    shards[name] = {"sha256": file_sha256(out / name),
                    "examples": len(examples["source"])}
    _write_json(manifest_path, {"identity": identity, "shards": shards})
    if progress:
      print(f"wrote {out / name} ({shard + 1}/{num_shards})", flush=True)
  manifest = {"identity": identity, "shards": shards}
  _write_json(manifest_path, manifest)
  return manifest


def _shard_arrays(compute, task, examples, batch_size) -> dict[str, Any]:
  """One shard's arrays: keys, lengths and the concatenated entries."""
  rows = []
  count = len(examples["source"])
  for start in range(0, count, batch_size):
    chunk = {c: examples[c][start:start + batch_size] for c in base.COLUMNS}
    rows.extend(compute(task.collate(chunk)))
  keys = [example_key(s, t) for s, t in zip(examples["source"],
                                             examples["target"])]
  arrays = {"keys": np.asarray(keys, dtype="S64"),
            "lengths": np.asarray([len(r["tokens"]) for r in rows], np.int64)}
  for field in rows[0]:
    arrays[field] = np.concatenate([r[field] for r in rows], axis=0)
  return arrays


class TeacherCache:
  """A verified cache, loaded into memory; looks entries up by example."""

  def __init__(self, directory, manifest: Mapping[str, Any],
               entries: dict[str, dict[str, np.ndarray]]):
    self.directory = str(directory)
    self.identity = dict(manifest["identity"])
    self._entries = entries

  def __len__(self) -> int:
    return len(self._entries)

  def _rows(self, task_batch: base.TaskBatch) -> Iterator[dict]:
    for source, target in zip(task_batch.sources, task_batch.targets):
      key = example_key(source, target)
      if key not in self._entries:
        raise ValueError(
            f"teacher cache {self.directory} holds no entry for the example "
            f"with source {source[:60]!r}; it caches the train split of "
            f"task {self.identity['task']!r} only.")
      yield self._entries[key]

  def top_k(self, task_batch: base.TaskBatch) -> tuple[np.ndarray,
                                                       np.ndarray]:
    """Cached (ids int32, log-probs float32), `[B, T, K]` each.

    T is the batch's target length; positions past an example's cached
    length hold id 0 and log-prob 0 (the completion mask excludes them).
    Raises if the cached tokens differ from the batch's targets.
    """
    if self.identity["mode"] != "top_k":
      validation.fail("teacher cache mode", self.identity["mode"],
                      "supervised_kd reads a cache built with --mode=top_k")
    b, t = task_batch.target_tokens.shape
    k = self.identity["top_k"]
    ids = np.zeros((b, t, k), np.int32)
    logp = np.zeros((b, t, k), np.float32)
    for row, entry in enumerate(self._rows(task_batch)):
      n = min(len(entry["tokens"]), int(task_batch.target_mask[row].sum()))
      if not np.array_equal(entry["tokens"][:n],
                            task_batch.target_tokens[row, :n]):
        raise ValueError(
            f"teacher cache {self.directory}: the cached target tokens of "
            f"row {row} differ from the batch's; the task's tokenization "
            "changed since the cache was built.")
      ids[row, :n], logp[row, :n] = entry["ids"][:n], entry["logp"][:n]
    return ids, logp

  def samples(self, task_batch: base.TaskBatch, pad_token_id: int
              ) -> tuple[np.ndarray, np.ndarray]:
    """Cached teacher completions: (tokens int32, mask bool) `[B, T]`.

    T is the longest cached completion of the batch rounded up to a bucket
    (powers of two up to the cache's max_new_tokens), so a run compiles a
    handful of shapes.
    """
    if self.identity["mode"] != "samples":
      validation.fail("teacher cache mode", self.identity["mode"],
                      "seqkd reads a cache built with --mode=samples")
    rows = [entry["tokens"] for entry in self._rows(task_batch)]
    longest = max(len(r) for r in rows)
    most = max(longest, self.identity.get("max_new_tokens") or 1)
    t = base.bucket_length(longest, base.bucket_sizes(most))
    tokens = np.full((len(rows), t), pad_token_id, np.int32)
    mask = np.zeros((len(rows), t), bool)
    for row, r in enumerate(rows):
      tokens[row, :len(r)], mask[row, :len(r)] = r, True
    return tokens, mask


def check_identity(directory, expected: Mapping[str, Any]) -> None:
  """Refuses a cache whose manifest differs from `expected` (names what)."""
  path = pathlib.Path(directory) / MANIFEST
  if not path.exists():
    validation.fail("teacher_cache", str(directory),
                    f"a directory with a {MANIFEST} written by "
                    "gkdrl.runners.cache_teacher")
  _check_identity(json.loads(path.read_text())["identity"], expected,
                  str(directory))


def open_cache(directory, expected: Mapping[str, Any] | None = None
               ) -> TeacherCache:
  """Loads a cache, checking its identity and every shard's checksum.

  Args:
    directory: the cache directory.
    expected: identity values the run needs (e.g. "task", "task_seed",
      "tokenizer", "mode"); each one that differs is named in the error.

  Returns:
    The `TeacherCache`.
  """
  path = pathlib.Path(directory)
  check_identity(path, dict(expected or {}))
  manifest = json.loads((path / MANIFEST).read_text())
  identity = manifest["identity"]
  num_shards = -(-identity["num_examples"] // identity["shard_size"])
  entries = {}
  for shard in range(num_shards):
    name = _shard_name(shard)
    listed = manifest["shards"].get(name)
    if listed is None or not (path / name).exists():
      raise ValueError(f"teacher cache {path} is incomplete: shard {name} "
                       "is missing; rerun gkdrl.runners.cache_teacher with "
                       "the same settings to finish it.")
    if file_sha256(path / name) != listed["sha256"]:
      raise ValueError(f"teacher cache {path}: shard {name} is corrupt (its "
                       "SHA-256 differs from the manifest's); rerun "
                       "gkdrl.runners.cache_teacher to rebuild it.")
    with np.load(path / name) as data:
      arrays = {k: data[k] for k in data.files}
    offsets = np.concatenate([[0], np.cumsum(arrays["lengths"])])
    fields = [f for f in arrays if f not in ("keys", "lengths")]
    for i, key in enumerate(arrays["keys"]):
      entries[key.decode()] = {f: arrays[f][offsets[i]:offsets[i + 1]]
                               for f in fields}
  return TeacherCache(path, manifest, entries)
