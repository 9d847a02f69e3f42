"""The benchmark scripts meant for a GPU, run on the CPU in their quick form.

A GPU machine is lent for minutes, so its scripts must run there the first
time: each test runs one as a user does, in a subprocess, and checks what it
prints (the tables' rows and columns, the parity check and losses it
reports, what the memory rows must show). How fast anything runs is for
the scripts to measure, not for these tests.
"""

import json
import math
import pathlib
import re
import subprocess
import sys

import pytest

from tests import shared_programs

REPO = pathlib.Path(__file__).resolve().parents[1]
NUMBER = r"-?\d[\d,]*(?:\.\d+)?(?:e[-+]\d+)?"


def _run(command: list[str], **variables: str) -> str:
  result = subprocess.run(
      command, cwd=REPO, capture_output=True, text=True, timeout=900,
      env=shared_programs.subprocess_env(PYTHON=sys.executable,
                                         **variables))
  assert result.returncode == 0, (
      f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n"
      f"{result.stderr[-3000:]}")
  return result.stdout


def _row(text: str, first: str) -> list[str]:
  """The fields of the one line of `text` that starts with `first`."""
  rows = [line.split() for line in text.splitlines()
          if line.split()[:1] == [first]]
  assert len(rows) == 1, f"expected one {first!r} row in:\n{text}"
  return rows[0]


def _markdown_rows(text: str) -> dict[str, list[str]]:
  """The body rows of the Markdown table in `text`, by their first cell."""
  lines = [line.strip().strip("|") for line in text.splitlines()
           if line.startswith("|")]
  cells = [[c.strip() for c in line.split("|")] for line in lines]
  separator = next(i for i, row in enumerate(cells)
                   if all(set(c) <= set("-: ") for c in row))
  return {row[0]: row[1:] for row in cells[separator + 1:]}


def _float(cell: str) -> float:
  return float(cell.replace(",", ""))


@pytest.mark.slow
def test_run_all_runs_the_accelerator_suite_quick(tmp_path):
  """The GPU branch of run_all.sh (forced on the CPU): gpu_throughput.py
  --hf and gkd_step.py (the tiny pair), each in its quick form, tables to
  stdout and to <out>/<name>.txt; no SmolLM2-sized step or 360M update in
  the quick suite."""
  out = tmp_path / "results"
  stdout = _run(["bash", "benchmarks/run_all.sh", "--quick", "--out",
                 str(out)], RUN_ALL_BACKEND="gpu")
  assert "== backend: gpu, quick=1, budget 540s" in stdout
  assert "FAILED" not in stdout and "skipped" not in stdout
  assert "gkd_step_smollm2" not in stdout
  assert "gpu_throughput_360m" not in stdout
  assert re.search(r"== done in \d+s", stdout)
  assert sorted(p.name for p in out.iterdir()) == [
      "env.txt", "gkd_step.txt", "gpu_throughput.txt", "stderr.log"]
  env = (out / "env.txt").read_text()
  assert "gkdrl imports: ok" in env and "jax devices:" in env

  throughput = (out / "gpu_throughput.txt").read_text()
  assert re.search(r"^what\s+impl\s+dtype\s+remat\s+s/call\s+tokens/s\s+MFU"
                   r"\s+MFU incl. teacher\s+of HBM$", throughput, re.MULTILINE)
  assert "update: B 4 in 2 micro-batches, L 16 (64 tokens a step)" in (
      throughput)
  for what in ("sample", "update"):
    for dtype in ("bfloat16", "float32"):
      row = re.search(rf"^{what}\s+gkdrl\s+{dtype}\s+\S+\s+({NUMBER})\s+"
                      rf"({NUMBER})\s.*\s(\S+)$", throughput, re.MULTILINE)
      assert row, f"no {what} {dtype} row in:\n{throughput}"
      assert _float(row.group(1)) > 0 and _float(row.group(2)) > 0
      # No bandwidth is known for a CPU: no share of the HBM bound.
      assert row.group(3) == "-", row.group(0)

  step = (out / "gkd_step.txt").read_text()
  assert "# tiny: V 4096," in step  # the quick suite's pair
  difference = re.search(rf"max \|diff\| ({NUMBER})", step)
  assert difference and float(difference.group(1)) < 1e-4, step
  header = _row(step, "impl")
  assert header == ["impl", "s/step", "steps/s", "tok/s", "vs", "trl",
                    "sampling", "s", "rest", "s", "loss", "1"]
  ours = _row(step, "gkdrl")
  seconds, steps_per_s, sampling, rest, loss = (
      float(ours[1]), float(ours[2]), float(ours[5]), float(ours[6]),
      float(ours[7]))
  assert steps_per_s == pytest.approx(1 / seconds, rel=2e-3, abs=2e-3)
  assert sampling + rest == pytest.approx(seconds, abs=2e-3)
  assert math.isfinite(loss) and loss > 0
  for mode in ("gkdrl/loop", "gkdrl/async"):
    # Whole-loop rows time steps only, without the per-step breakdown.
    row = _row(step, mode)
    assert float(row[2]) == pytest.approx(1 / float(row[1]), rel=2e-3,
                                          abs=2e-3)
    assert row[5:] == ["-", "-", "-"], row
  assert re.search(rf"# roofline here, now: {NUMBER} GFLOP/s", step)
  streaming = re.search(
      rf"# not in the bound: the student's ({NUMBER}) MB of weights read "
      rf"once a token .*: ({NUMBER}) GB/s, sampling >= ({NUMBER}) s", step)
  assert streaming, step
  assert all(_float(streaming.group(i)) > 0 for i in (1, 2, 3)), step
  for mode in ("gkdrl", "gkdrl/loop", "gkdrl/async"):
    assert re.search(rf"# {mode}: step at \d+% of the bound", step), mode


@pytest.mark.slow
def test_memory_real_pairs_quick_rows():
  """Accumulation and LoRA lower what their rows say they lower."""
  rows = _markdown_rows(_run([sys.executable,
                              "benchmarks/memory_real_pairs.py", "--quick"]))
  assert {"full", "accum 4", "lora 16", "lora 16 bf16"} <= set(rows)
  full, accum, lora = ([None if c == "-" else _float(c) for c in rows[name]]
                       for name in ("full", "accum 4", "lora 16"))
  # Columns: trainable, state, optimizer, arguments, temp, peak, measured.
  assert accum[0] == full[0] and accum[4] < full[4]
  assert lora[0] < full[0] / 10 and lora[2] < full[2]


@pytest.mark.slow
def test_accumulation_memory_reduced_rows():
  """Four micro-batches need less scratch memory than one whole batch."""
  rows = _markdown_rows(_run([sys.executable,
                              "benchmarks/accumulation_memory.py"]))
  assert set(rows) == {"1", "4"}
  temp = {steps: _float(cells[0]) for steps, cells in rows.items()}
  assert 0 < temp["4"] < temp["1"]


@pytest.mark.slow
def test_host_memory_quick_has_a_row_per_environment():
  """The default environment, it with gkdrl's keep_scratch_memory(), and
  each --env get a row of 9 measurements."""
  setting = "GLIBC_TUNABLES=glibc.malloc.hugetlb=1"
  text = _run([sys.executable, "benchmarks/host_memory.py", "--quick",
               "--env", setting], JAX_PLATFORMS="cpu")
  for first in ("(default)", "keep_scratch_memory()", setting):
    cells = [_float(c) for c in _row(text, first)[1:]]
    assert len(cells) == 9, text
    update_wall, act_wall, peak_rss = cells[0], cells[4], cells[8]
    assert update_wall > 0 and act_wall > 0 and peak_rss > 0, text
    assert min(cells) >= 0, text


def test_host_memory_refuses_a_setting_that_is_not_name_value():
  result = subprocess.run(
      [sys.executable, "benchmarks/host_memory.py", "--env", "A=1 B"],
      cwd=REPO, capture_output=True, text=True, timeout=300,
      env=shared_programs.subprocess_env(PYTHON=sys.executable))
  assert result.returncode != 0
  assert "--env='A=1 B': 'B' is not NAME=VALUE" in result.stderr


@pytest.mark.slow
def test_gpu_throughput_share_of_the_hbm_bound(tmp_path):
  """With a bandwidth given, a sample row's "of HBM" is the least traffic
  (counted here token by token) read at that bandwidth over its time."""
  out = tmp_path / "rows.json"
  text = _run([sys.executable, "benchmarks/gpu_throughput.py", "--quick",
               "--what=sample", "--dtypes=bfloat16,float32",
               "--peak_gbps=50", "--json", str(out)])
  assert "memory bandwidth 50 GB/s from --peak_gbps" in text
  report = json.loads(out.read_text())
  config, args = report["config"], report["args"]
  assert [r["what"] for r in report["rows"]] == ["sample", "sample"]
  batch, prompt, new = (args["sample_batch"], args["prompt_length"],
                        args["new_tokens"])
  for row in report["rows"]:
    itemsize = {"bfloat16": 2, "float32": 4}[row["dtype"]]
    least = 0
    for token in range(new):
      least += report["n"] * itemsize  # every weight, for every token
      if token:  # a decode step: the cache of every token so far
        cached = prompt + token
        least += (batch * cached * config["n_layers"] * 2
                  * config["n_kv_heads"] * config["head_dim"] * itemsize)
    assert row["least_bytes"] == least
    share = least / 50e9 / row["seconds"]
    assert row["hbm_fraction"] == pytest.approx(share, rel=1e-9)
    printed = re.search(rf"^sample\s+gkdrl\s+{row['dtype']}\s.*\s({NUMBER})%$",
                        text, re.MULTILINE)
    assert printed, text
    assert float(printed.group(1)) == pytest.approx(100 * share, abs=0.051)
  assert not re.search(r"^update", text, re.MULTILINE)


@pytest.mark.parametrize("flags, message", [
    (["--what=sample,train"], "--what must name sample, update or both"),
    (["--grad_accum=3"], "--grad_accum must be >= 1 and divide --train_batch "
     "(64); got 3"),
    (["--size=1b"], "argument --size: invalid choice: '1b'"),
])
def test_gpu_throughput_refuses_bad_flags(flags, message):
  result = subprocess.run(
      [sys.executable, "benchmarks/gpu_throughput.py", *flags], cwd=REPO,
      capture_output=True, text=True, timeout=300,
      env=shared_programs.subprocess_env(PYTHON=sys.executable))
  assert result.returncode == 2, result.stderr
  assert message in result.stderr, result.stderr
