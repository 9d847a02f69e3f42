"""The four studies in quick mode: they run and write well-formed results."""

import json
import math
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from experiments import ablation
from experiments import common
from experiments import diversity
from experiments import lambda_sweep
from experiments import methods
from experiments import protocol
from experiments import rl_gkd
from experiments import run_all
from gkdrl.runners import compilation
from tests import shared_programs

VERDICTS = {"confirmed", "contradicted", "cannot tell"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
REPO = pathlib.Path(__file__).resolve().parents[2]


def _with_compilation_cache() -> dict[str, str]:
  """The environment with the runners' compilation cache left on.

  The suite turns it off for its own processes (conftest); the studies'
  programs run in a process of their own, with their cache under --out, so
  the same evaluation and sampling programs compile once for all the runs.
  """
  env = shared_programs.subprocess_env()
  env.pop(compilation.ENV_SWITCH, None)
  return env


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
  out = tmp_path_factory.mktemp("experiments")
  result = subprocess.run(
      [sys.executable, "-m", "experiments.run_all", "--quick",
       f"--out={out}"], cwd=REPO, env=_with_compilation_cache(),
      capture_output=True, text=True, timeout=3600, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  return out, result.stdout


def _finite_stat(stat, n):
  assert set(stat) == {"mean", "std", "n", "values"}
  assert stat["n"] == n == len(stat["values"])
  assert all(math.isfinite(v) for v in stat["values"])
  np.testing.assert_allclose(stat["mean"], np.mean(stat["values"]))


def _check_files(out, name):
  folder = out / name
  data = json.loads((folder / f"{name}.json").read_text())
  markdown = (folder / f"{name}.md").read_text()
  assert (folder / f"{name}.png").read_bytes()[:8] == PNG_MAGIC
  assert f"]({name}.png)" in markdown
  for claim in data["claims"]:
    assert claim["verdict"] in VERDICTS
    assert claim["claim"] in markdown
  return data, markdown


@pytest.mark.slow
def test_methods_study_has_every_method_and_task(quick):
  out, _ = quick
  data, markdown = _check_files(out, methods.NAME)
  assert set(data["tasks"]) == set(methods.TASKS)
  for task, result in data["tasks"].items():
    assert set(result["stats"]) == {"Teacher", *methods.METHODS}
    for label, stats in result["stats"].items():
      assert set(stats) == set(methods.MODES)
      for mode in methods.MODES:
        for metric in ("reward", "rouge2", "teacher_kl"):
          _finite_stat(stats[mode][metric], len(common.QUICK.seeds))
      assert f"| {label} |" in markdown
    trained = [m for m, s in methods.METHODS.items() if s is not None]
    assert sorted(result["run_seconds"]) == sorted(trained)
    assert f"## {task}, greedy decoding" in markdown


@pytest.mark.slow
def test_lambda_study_covers_the_grid_and_shares_runs(quick):
  out, _ = quick
  data, _ = _check_files(out, lambda_sweep.NAME)
  assert sorted(data["stats"]) == sorted(f"{l:g}" for l in
                                         lambda_sweep.LAMBDAS)
  for stats in data["stats"].values():
    _finite_stat(stats["sample"]["reward"], len(common.QUICK.seeds))
  # Lambda 1 and 0.5 are the methods study's runs: one directory each.
  runs = [p.name for p in (out / "runs" / "facts").iterdir()]
  assert sum(r.startswith("gkd_jsd_0.9-seed") for r in runs) == 1
  assert sum(r.startswith("mixed_gkd_jsd_0.9-seed") for r in runs) == 1
  methods_data = json.loads((out / "methods" / "methods.json").read_text())
  assert (data["stats"]["1"]["greedy"]["reward"] ==
          methods_data["tasks"]["facts"]["stats"]["GKD JSD(0.9)"]["greedy"]
          ["reward"])


@pytest.mark.slow
def test_diversity_study_reports_each_temperature(quick):
  out, _ = quick
  data, _ = _check_files(out, diversity.NAME)
  assert set(data["stats"]) == set(diversity.DIVERGENCES)
  for by_temperature in data["stats"].values():
    assert set(by_temperature) == {f"t{t:g}" for t in diversity.TEMPERATURES}
    for stats in by_temperature.values():
      assert 0.0 <= stats["self_bleu"]["mean"] <= 100.0
  assert len(data["claims"]) == 2 * len(diversity.TEMPERATURES)


@pytest.mark.slow
def test_rl_gkd_study_has_the_sweep_and_the_rl_baseline(quick):
  out, _ = quick
  data, markdown = _check_files(out, rl_gkd.NAME)
  expected = {"Teacher", "SFT start", rl_gkd.RL_BASELINE,
              *(rl_gkd.label(a) for a in rl_gkd.ALPHAS)}
  assert set(data["stats"]) == expected
  assert rl_gkd.RL_BASELINE in markdown
  config = json.loads(next(
      (out / "runs" / "facts").glob("rl_kl_to_start*/config.json"))
      .read_text())
  assert config["agent_config"]["alpha"] == 0.0
  assert config["agent_config"]["ref_kl_coef"] == rl_gkd.REF_KL_COEF


@pytest.mark.slow
def test_protocol_study_tunes_on_validation_and_keeps_the_best_sft(quick):
  out, _ = quick
  folder = out / protocol.NAME
  data = json.loads((folder / "protocol.json").read_text())
  assert set(data["tasks"]) == set(protocol.TASKS)
  for task, result in data["tasks"].items():
    for name in (f"protocol_{task}.png", f"sft_{task}.png"):
      assert (folder / name).read_bytes()[:8] == PNG_MAGIC
    assert set(result["chosen"]) == set(protocol.METHODS)
    for label, rate in result["chosen"].items():
      grid = result["grid"][label]
      assert grid[f"{rate:g}"] == max(grid.values())
    assert set(result["sft"]) == {"teacher", "student"}
    for record in result["sft"].values():
      losses = {step: loss for step, loss in record["curves"]["validation"]}
      assert losses[record["best_step"]] == min(losses.values())
    for curve in result["curves"].values():
      assert curve["steps"][0] == 0 and curve["steps"][-1] == 2
      assert len(curve["mean"]) == len(curve["steps"])
    assert set(result["stats"]) == {"Teacher", "SFT start",
                                    *protocol.METHODS}
    assert {c["task"] for c in result["claims"]} == {task}
    # Every run of the study evaluated its student on the test split.
    runs = list((out / "runs" / task).glob("protocol_supervised_kd-seed0-*"))
    assert any((r / "eval" / "test.json").exists() for r in runs)
  assert len(data["claims"]) == sum(len(r["claims"])
                                    for r in data["tasks"].values())
  for claim in data["claims"]:
    assert claim["verdict"] in VERDICTS
  assert "test greedy accuracy" in (folder / "protocol.md").read_text()


@pytest.mark.slow
def test_ablation_changes_one_factor_at_a_time(quick):
  out, _ = quick
  data = json.loads((out / ablation.NAME / "ablation.json").read_text())
  factors = [ablation.BASELINE, *ablation.START_FACTORS,
             *ablation.SAMPLING_FACTORS]
  assert set(data["stats"]) == set(factors)  # JSON keys come back sorted
  assert "SFT (as long)" not in data["stats"]["1-layer student"]
  assert "SFT (as long)" in data["stats"]["unconverged start"]
  assert [c["factor"] for c in data["claims"]] == factors
  assert not data["claims"][0]["moves ordering"]
  runs = out / "runs" / "facts"

  def config(prefix):
    return json.loads(next(runs.glob(f"protocol_{prefix}-seed0-*/"
                                     "config.json"))
                      .read_text())

  base = config("gkd_jsd_0.9")
  hot = config("gkd_jsd_0.9_sampling_temperature_0.7")
  assert hot["agent_config"]["sample_temperature"] == 0.7
  assert base["agent_config"]["sample_temperature"] == 1.0
  assert config("gkd_jsd_0.9_lambda_0")["agent_config"]["lmbda"] == 0.0
  for factor in ("unconverged_start", "1-layer_student"):
    other = config(f"gkd_jsd_0.9_{factor}")
    assert other["student_path"] != base["student_path"]
    assert other["agent_config"] == base["agent_config"]
    assert other["teacher_path"] == base["teacher_path"]


@pytest.mark.slow
def test_run_all_times_every_study(quick):
  out, stdout = quick
  timing = json.loads((out / "timing.json").read_text())["seconds"]
  assert set(timing) == {s.NAME for s in run_all.STUDIES} | {"total"}
  np.testing.assert_allclose(
      timing["total"], sum(v for k, v in timing.items() if k != "total"))
  text = (out / "results.md").read_text()
  for study in run_all.STUDIES:
    figure = f"]({study.NAME}/{study.NAME}"  # protocol: one per task
    assert f"{figure}.png)" in text or f"{figure}_facts.png)" in text
  for study in run_all.STUDIES:
    assert (out / study.NAME / f"{study.NAME}.json").exists()
    assert f"{study.NAME:>10}: " in stdout
  assert (out / "xla").is_dir()  # the studies' compilation cache


@pytest.mark.slow
def test_a_study_runs_as_a_program_from_cached_runs(quick):
  out, _ = quick
  before = (out / "lambda" / "lambda.json").read_text()
  result = subprocess.run(
      [sys.executable, "-m", "experiments.lambda_sweep", "--quick",
       f"--out={out}"], cwd=REPO, env=_with_compilation_cache(),
      capture_output=True, text=True,
      timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  assert "| greedy | 0.25 |" in result.stdout
  after = json.loads((out / "lambda" / "lambda.json").read_text())
  assert after["stats"] == json.loads(before)["stats"]


def test_summarize_matches_numpy():
  values = [0.25, 1.5, -2.0, 3.125]
  stat = common.summarize(values)
  assert stat["n"] == 4
  np.testing.assert_allclose(stat["mean"], np.mean(values))
  np.testing.assert_allclose(stat["std"], np.std(values, ddof=1))
  assert common.summarize([2.0])["std"] == 0.0


@pytest.mark.parametrize("a, b, higher, expected", [
    ([1.0, 1.1, 0.9], [0.0, 0.1, -0.1], True, "confirmed"),
    ([1.0, 1.1, 0.9], [0.0, 0.1, -0.1], False, "contradicted"),
    ([1.0, 2.0, 0.0], [0.9, 1.9, -0.1], True, "cannot tell"),
    ([1.0], [0.0], True, "cannot tell"),
])
def test_verdict_uses_two_standard_errors(a, b, higher, expected):
  assert common.verdict(common.summarize(a), common.summarize(b),
                        higher_is_better=higher) == expected


def test_verdict_threshold_is_two_standard_errors():
  # Both sides have std 1 over 4 values: the standard error of the
  # difference is sqrt(1/4 + 1/4); a shift just above / below twice that.
  base = np.array([-1.0, -1.0, 1.0, 1.0]) * math.sqrt(3) / 2
  se = math.sqrt(0.5)
  b = common.summarize(base)
  assert common.verdict(common.summarize(base + 2 * se + 1e-6), b) == (
      "confirmed")
  assert common.verdict(common.summarize(base + 2 * se - 1e-6), b) == (
      "cannot tell")


def test_budget_rejects_bad_values():
  with pytest.raises(ValueError, match="steps=0"):
    common.Budget(steps=0, batch_size=1, learning_rate=1e-3,
                  eval_examples=1, eval_samples_per_prompt=1, seeds=(0,))
  with pytest.raises(ValueError, match="seeds"):
    common.Budget(steps=1, batch_size=1, learning_rate=1e-3,
                  eval_examples=1, eval_samples_per_prompt=1, seeds=(0, 0))
