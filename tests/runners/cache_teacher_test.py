"""cache_teacher, then train from the cache with no teacher loaded."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from gkdrl.runners import teacher_cache as cache_teacher
from gkdrl.runners import train
from tests import shared_programs
from tests.runners.runners_test import values


def test_train_from_a_teacher_cache_loads_no_teacher(model_dirs, facts,
                                                     tmp_path):
  teacher, _ = model_dirs
  task, _ = facts
  out = tmp_path / "cache"
  manifest = cache_teacher.make_cache(task_name="facts", out=str(out),
                                      teacher=teacher, top_k=4,
                                      shard_size=512, task=task)
  assert manifest["identity"]["num_examples"] == len(task.splits["train"])
  assert manifest["identity"]["top_k"] == 4
  shared = {}
  workdir = tmp_path / "run"
  summary = train.run(values(model_dirs, workdir, agent="supervised_kd",
                             teacher_cache=str(out), steps=2),
                      progress=False, shared=shared)
  assert shared["models"].teacher is None
  assert summary["teacher"] is None
  assert not (workdir / "eval" / "teacher.json").exists()
  records = [json.loads(line) for line in
             (workdir / "metrics.jsonl").read_text().splitlines()]
  assert all(np.isfinite(r["loss/divergence"]) for r in records)
  assert "student after" in train.summary_table(summary)


def test_train_refuses_a_cache_of_another_teacher(model_dirs, facts,
                                                  tmp_path):
  teacher, student = model_dirs
  task, _ = facts
  out = tmp_path / "cache"
  cache_teacher.make_cache(task_name="facts", out=str(out), teacher=teacher,
                           top_k=4, shard_size=512, task=task)
  run_values = values(model_dirs, tmp_path / "run", agent="supervised_kd",
                      teacher_cache=str(out), steps=1)
  run_values["teacher"] = student
  with pytest.raises(ValueError, match="teacher: cache has"):
    train.run(run_values, progress=False)


def test_the_cli_writes_a_cache_and_a_rerun_keeps_its_shards(model_dirs,
                                                             tmp_path):
  teacher, _ = model_dirs
  out = tmp_path / "cache"
  command = [sys.executable, "-m", "gkdrl.runners.cache_teacher",
             f"--teacher={teacher}", "--task=facts", "--top_k=4",
             "--shard_size=100", f"--out={out}"]
  env = shared_programs.subprocess_env(PYTHONPATH=str(pathlib.Path.cwd()))
  first = subprocess.run(command, capture_output=True, text=True, env=env,
                         check=False)
  assert first.returncode == 0, first.stderr
  manifest = json.loads((out / "manifest.json").read_text())
  assert len(manifest["shards"]) >= 2
  stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("shard_*.npz")}
  again = subprocess.run(command, capture_output=True, text=True, env=env,
                         check=False)
  assert again.returncode == 0, again.stderr
  assert stamps == {p.name: p.stat().st_mtime_ns
                    for p in out.glob("shard_*.npz")}
  other = subprocess.run(command[:-1] + [f"--out={out}", "--top_k=2"],
                         capture_output=True, text=True, env=env,
                         check=False)
  assert other.returncode == 1
  assert "top_k: cache has 4, expected 2" in other.stderr
