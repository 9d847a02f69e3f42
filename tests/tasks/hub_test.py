"""Tests for gkdrl/tasks/hub.py with local files (never the network)."""

import csv
import json

import datasets
import huggingface_hub
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gkdrl.tasks import base
from gkdrl.tasks import hub
from gkdrl.tasks import word_tokenizer


@pytest.fixture(autouse=True)
def offline(monkeypatch):
  # The libraries read HF_HUB_OFFLINE at import time, so patch their copies.
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
  monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)


def _xsum_rows(n, offset=0):
  return [{"document": f"The cat number {i} sat on the mat all day .",
           "summary": f"Cat {i} sat .", "id": str(1000 + i)}
          for i in range(offset, offset + n)]


def _gsm8k_rows(n, offset=0):
  return [{"question": f"Ada has {i} pens and buys 2 more . How many ?",
           "answer": f"{i} + 2 = <<{i}+2={i + 2}>>{i + 2}\n#### {i + 2:,}"}
          for i in range(offset, offset + n)]


def _write(path, rows):
  suffix = path.suffix
  if suffix == ".json":
    path.write_text(json.dumps(rows))
  elif suffix == ".jsonl":
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  elif suffix == ".csv":
    with open(path, "w", newline="") as f:
      writer = csv.DictWriter(f, fieldnames=list(rows[0]))
      writer.writeheader()
      writer.writerows(rows)
  else:
    pq.write_table(pa.Table.from_pylist(rows), path)
  return str(path)


@pytest.fixture(scope="module")
def tokenizer():
  words = set()
  rows = _xsum_rows(100) + _gsm8k_rows(100)
  for text in [hub.XSUM.prompt_template, hub.GSM8K.prompt_template] + [
      v for r in rows for v in r.values()]:
    words.update(text.replace("{source}", " ").split())
  return word_tokenizer.make_word_tokenizer(sorted(words))


@pytest.mark.parametrize("suffix", [".json", ".jsonl", ".csv", ".parquet"])
def test_xsum_from_one_local_file(tmp_path, tokenizer, suffix):
  rows = _xsum_rows(40)
  path = _write(tmp_path / f"xsum{suffix}", rows)
  task = hub.make_xsum_task(tokenizer, data_files=path, cache_dir=tmp_path,
                            seed=3)
  assert task.name == "xsum" and task.reward_fns == {}
  # 5% of 40 rows = 2 rows are carved out of train for validation and test.
  assert {s: len(d) for s, d in task.splits.items()} == {
      "train": 36, "validation": 2, "test": 2}
  by_id = {r["id"]: r for r in rows}
  ids = {split: list(task.splits[split]["id"]) for split in base.SPLITS}
  assert sorted(sum(ids.values(), [])) == sorted(by_id)  # disjoint, complete
  for split in base.SPLITS:
    dataset = task.splits[split]
    assert dataset.column_names == ["source", "prompt", "target", "id"]
    for row in dataset:
      original = by_id[row["id"]]
      assert row["source"] == original["document"]
      assert row["target"] == original["summary"]
      assert row["prompt"] == hub.XSUM.prompt_template.format(
          source=original["document"])
  batch = next(task.batches("train", 8, seed=0))
  assert batch.prompt_tokens.shape[0] == 8
  assert batch.prompt_tokens.shape[1] in task.prompt_buckets
  assert (batch.target_tokens[batch.target_mask][-1]
          == tokenizer.eos_token_id)


def test_gsm8k_from_split_files_with_accuracy(tmp_path, tokenizer):
  files = {"train": _write(tmp_path / "train.jsonl", _gsm8k_rows(30)),
           "test": _write(tmp_path / "test.jsonl", _gsm8k_rows(10, 500))}
  task = hub.make_gsm8k_task(tokenizer, data_files=files, cache_dir=tmp_path)
  assert {s: len(d) for s, d in task.splits.items()} == {
      "train": 28, "validation": 2, "test": 10}
  assert task.splits["test"].column_names == ["source", "prompt", "target"]
  assert task.splits["test"][0]["target"].endswith("#### 502")
  assert task.splits["test"][0]["prompt"] == (
      "Question: Ada has 500 pens and buys 2 more . How many ?\nAnswer:\n")
  test = task.splits["test"]
  sources, targets = list(test["source"]), list(test["target"])
  accuracy = task.reward_fns["accuracy"]
  np.testing.assert_array_equal(accuracy(sources, targets, targets), 1.0)
  wrong = [f"#### {int(t.split()[-1].replace(',', '')) - 1}" for t in targets]
  np.testing.assert_array_equal(accuracy(sources, wrong, targets), 0.0)


def test_three_split_files_and_size_limits(tmp_path, tokenizer):
  files = {"train": [_write(tmp_path / "a.parquet", _xsum_rows(10)),
                     _write(tmp_path / "b.parquet", _xsum_rows(10, 10))],
           "validation": _write(tmp_path / "v.parquet", _xsum_rows(5, 50)),
           "test": _write(tmp_path / "t.parquet", _xsum_rows(5, 60))}
  task = hub.make_xsum_task(tokenizer, data_files=files, cache_dir=tmp_path,
                            num_train=15, num_test=3)
  assert {s: len(d) for s, d in task.splits.items()} == {
      "train": 15, "validation": 5, "test": 3}
  assert list(task.splits["validation"]["id"]) == [
      str(1050 + i) for i in range(5)]


def test_long_prompts_keep_head_and_cue(tmp_path, tokenizer):
  rows = _xsum_rows(20)
  rows[0]["document"] = " ".join([rows[0]["document"]] * 20)
  path = _write(tmp_path / "x.jsonl", rows)
  task = hub.make_xsum_task(tokenizer, data_files=path, cache_dir=tmp_path,
                            max_prompt_tokens=32, max_target_tokens=4,
                            holdout_fraction=0.1)
  examples = {c: sum((list(task.splits[s][c]) for s in base.SPLITS), [])
              for c in base.COLUMNS}
  batch = task.collate(examples, fixed_shape=True)
  assert batch.prompt_tokens.shape[1] == 32
  longest = int(batch.prompt_mask.sum(axis=1).argmax())
  assert batch.prompt_mask[longest].all()  # the long one, cut to 32
  ids = tokenizer(examples["prompt"][longest])["input_ids"]
  assert len(ids) > 32
  assert batch.prompt_tokens[longest, :10].tolist() == ids[:10]  # the head
  cue = tokenizer("\n\nSummary:\n", add_special_tokens=False)["input_ids"]
  assert [row[-len(cue):].tolist() for row in batch.prompt_tokens] == [
      cue] * len(batch.sources)
  assert batch.target_tokens.shape[1] == 4
  assert (batch.target_tokens[:, -1][batch.target_mask[:, -1]]
          == tokenizer.eos_token_id).all()


def test_neither_hub_nor_files_gives_a_clear_error(tmp_path, tokenizer):
  with pytest.raises(hub.DatasetUnavailableError) as error:
    hub.make_xsum_task(tokenizer, cache_dir=tmp_path)
  message = str(error.value)
  for expected in ("xsum", "EdinburghNLP/xsum", "refs/convert/parquet",
                   "data_files=", "document",
                   "summary", "'id'", "json", "jsonl", "csv", "parquet"):
    assert expected in message
  with pytest.raises(hub.DatasetUnavailableError, match="gsm8k.*question"):
    hub.make_gsm8k_task(tokenizer, cache_dir=tmp_path)


def test_missing_local_file_is_named(tmp_path, tokenizer):
  missing = str(tmp_path / "nowhere.jsonl")
  with pytest.raises(hub.DatasetUnavailableError,
                     match="not found.*nowhere.jsonl.*question"):
    hub.make_gsm8k_task(tokenizer, data_files=missing, cache_dir=tmp_path)


def test_missing_columns_are_named(tmp_path, tokenizer):
  rows = [{"document": r["document"], "id": r["id"]} for r in _xsum_rows(9)]
  path = _write(tmp_path / "x.csv", rows)
  with pytest.raises(ValueError, match=r"lacks columns \['summary'\].*found"):
    hub.make_xsum_task(tokenizer, data_files=path, cache_dir=tmp_path)


@pytest.mark.parametrize("kwargs, match", [
    ({"data_files": {"dev": "x.jsonl"}}, "split must be one of"),
    ({"data_files": {"test": "x.jsonl"}}, "needs a 'train' split"),
    ({"data_files": 3}, "data_files must be a path"),
    ({"data_files": "x.txt"}, "must all be one of the formats"),
    ({"holdout_fraction": 0.5}, "holdout_fraction must be in"),
    ({"num_train": 0}, "num_train=0 is not allowed; it must be an int >= 1"),
    ({"prompt_template": "no field"}, "prompt_template must be"),
])
def test_rejects_bad_arguments(tmp_path, tokenizer, kwargs, match):
  (tmp_path / "x.jsonl").write_text("")
  (tmp_path / "x.txt").write_text("")
  kwargs.setdefault("data_files", str(tmp_path / "x.jsonl"))
  if isinstance(kwargs["data_files"], dict):
    kwargs["data_files"] = {s: str(tmp_path / p)
                            for s, p in kwargs["data_files"].items()}
  elif kwargs["data_files"] == "x.txt":
    kwargs["data_files"] = str(tmp_path / "x.txt")
  with pytest.raises(ValueError, match=match):
    hub.make_xsum_task(tokenizer, cache_dir=tmp_path, **kwargs)


def test_rejects_a_non_tokenizer(tmp_path):
  with pytest.raises(ValueError, match="tokenizer must be a transformers"):
    hub.make_xsum_task("gpt2", data_files=str(tmp_path / "x.jsonl"))
