"""Bad local data for the hub tasks: one clear error, found when the task
loads (never mid-run), naming the file, the line or row, and what was
expected; or, with skip_bad_rows, the bad rows dropped and counted."""

import json
import logging

import pytest

from gkdrl.tasks import hub
from tests.tasks.hub_test import _gsm8k_rows
from tests.tasks.hub_test import _write
from tests.tasks.hub_test import _xsum_rows
from tests.tasks.hub_test import offline  # pylint: disable=unused-import
from tests.tasks.hub_test import tokenizer  # pylint: disable=unused-import


def _jsonl(path, rows):
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  return str(path)


@pytest.mark.parametrize("content, state", [("", "empty"),
                                            ("  \n\n\t\n", "only whitespace")])
@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv"])
def test_empty_and_blank_files_are_named(tmp_path, tokenizer, content, state,
                                         suffix):
  path = tmp_path / f"train{suffix}"
  path.write_text(content)
  with pytest.raises(ValueError) as error:
    hub.make_gsm8k_task(tokenizer, data_files=str(path), cache_dir=tmp_path)
  message = str(error.value)
  assert message.startswith(f"{path}: the file is {state}; expected ")
  assert "question" in message and "answer" in message


def test_malformed_json_line_is_named_with_its_line(tmp_path, tokenizer):
  path = tmp_path / "train.jsonl"
  lines = [json.dumps(r) for r in _gsm8k_rows(6)]
  lines[3] = lines[3][:-5]  # cut off the end of the fourth record
  path.write_text("\n".join(lines) + "\n")
  with pytest.raises(ValueError) as error:
    hub.make_gsm8k_task(tokenizer, data_files=str(path), cache_dir=tmp_path)
  message = str(error.value)
  assert message.startswith(f"{path}, line 4: not valid JSON (")
  assert ("expected one JSON object per line with keys ['question', "
          "'answer']") in message


def test_a_json_line_that_is_not_an_object_is_named(tmp_path, tokenizer):
  path = tmp_path / "train.jsonl"
  path.write_text(json.dumps(_gsm8k_rows(1)[0]) + "\n[1, 2]\n")
  with pytest.raises(ValueError,
                     match=r"train\.jsonl, line 2: a JSON list where a JSON "
                     r"object was expected"):
    hub.make_gsm8k_task(tokenizer, data_files=str(path), cache_dir=tmp_path)


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_non_utf8_bytes_are_named_with_file_and_line(tmp_path, tokenizer,
                                                     suffix):
  path = tmp_path / f"train{suffix}"
  _write(path, _xsum_rows(8))
  lines = path.read_bytes().split(b"\n")
  lines[2] = lines[2].replace(b"cat", b"c\xe9t", 1)  # Latin-1, not UTF-8
  path.write_bytes(b"\n".join(lines))
  with pytest.raises(ValueError) as error:
    hub.make_xsum_task(tokenizer, data_files=str(path), cache_dir=tmp_path)
  message = str(error.value)
  assert message.startswith(f"{path}, line 3: byte 0xe9 at column ")
  assert "is not UTF-8; expected UTF-8 text" in message


def test_one_bad_gsm8k_row_is_found_when_the_task_loads(tmp_path, tokenizer):
  rows = _gsm8k_rows(40)
  rows[17]["answer"] = "the answer is 19"  # no '#### <number>'
  test_rows = _gsm8k_rows(10, 100)
  test_rows[4]["answer"] = "#### many"
  files = {"train": _jsonl(tmp_path / "train.jsonl", rows),
           "test": _jsonl(tmp_path / "test.jsonl", test_rows)}
  with pytest.raises(ValueError) as error:
    hub.make_gsm8k_task(tokenizer, data_files=files, cache_dir=tmp_path)
  message = str(error.value)
  assert message.startswith("gsm8k: 2 of 50 rows of files ")
  assert (f"train row 18 ({files['train']}, line 18): 'answer' has no "
          "'#### <number>' final answer") in message
  assert f"test row 5 ({files['test']}, line 5)" in message
  assert "--skip_bad_rows" in message


def test_skip_bad_rows_drops_and_counts_them(tmp_path, tokenizer, caplog):
  rows = _gsm8k_rows(40)
  rows[17]["answer"] = "the answer is 19"
  rows[30]["answer"] = 42  # an int, not text
  del rows[5]["question"]  # a missing field
  rows[9]["question"] = "   "  # empty text
  path = _jsonl(tmp_path / "train.jsonl", rows)
  with pytest.raises(ValueError, match=r"gsm8k: 4 of 40 rows"):
    hub.make_gsm8k_task(tokenizer, data_files=path, cache_dir=tmp_path)
  with caplog.at_level(logging.WARNING):
    task = hub.make_gsm8k_task(tokenizer, data_files=path, cache_dir=tmp_path,
                               skip_bad_rows=True)
  assert sum(len(d) for d in task.splits.values()) == 36
  for problem in ("train row 6 (", "no 'question'",
                  "train row 10 (", "'question' is empty",
                  "train row 18 (", "train row 31 (",
                  "'answer' is int 42, where text was expected"):
    assert problem in caplog.text
  assert "gsm8k: 4 of 40 rows" in caplog.text
  targets = [t for d in task.splits.values() for t in d["target"]]
  assert all("#### " in t for t in targets)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_bad_rows_in_other_formats_are_located_by_row(tmp_path, tokenizer,
                                                      suffix):
  rows = _xsum_rows(20)
  rows[7]["summary"] = ""
  path = _write(tmp_path / f"x{suffix}", rows)
  with pytest.raises(ValueError, match=r"xsum: 1 of 20 rows .*train row 8: "
                     r"(no 'summary'|'summary' is empty)"):
    hub.make_xsum_task(tokenizer, data_files=path, cache_dir=tmp_path)


def test_local_xsum_needs_no_id_column(tmp_path, tokenizer):
  rows = [{"document": r["document"], "summary": r["summary"]}
          for r in _xsum_rows(40)]
  path = _jsonl(tmp_path / "xsum.jsonl", rows)
  task = hub.make_xsum_task(tokenizer, data_files=path, cache_dir=tmp_path)
  assert task.splits["train"].column_names == ["source", "prompt", "target"]
  assert sum(len(d) for d in task.splits.values()) == 40
