"""Runner smoke tests in temporary workdirs: files, keys, resume, errors."""

import csv
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import safetensors.numpy

from gkdrl.runners import cpu_memory
from gkdrl.runners import sweep_alpha
from gkdrl.runners import train
from tests import shared_programs

EVAL_KEYS = {"reward", "rouge2", "teacher_kl", "self_bleu", "length",
             "factuality"}


def values(model_dirs, workdir, **overrides):
  teacher, student = model_dirs
  settings = dict(teacher=teacher, student=student, workdir=str(workdir),
                  steps=4, batch_size=4, save_every=2, log_every=1,
                  eval_examples=8, eval_samples_per_prompt=2,
                  max_new_tokens=8)
  settings.update(overrides)
  return train.default_values(**settings)


@pytest.fixture(scope="module")
def shared():
  return {}


def _metrics(workdir):
  lines = (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()
  return [json.loads(line) for line in lines]


def test_train_writes_the_output_contract(model_dirs, tmp_path, shared):
  workdir = tmp_path / "run"
  summary = train.run(values(model_dirs, workdir), progress=False,
                      shared=shared)
  config = json.loads((workdir / "config.json").read_text())
  assert config["agent"] == "gkd_rl"
  assert config["agent_config"]["alpha"] == 0.5
  assert config["agent_config"]["beta"] == 0.9
  records = _metrics(workdir)
  assert [r["step"] for r in records] == [1, 2, 3, 4]
  for key in ("loss/total", "loss/divergence", "loss/pg", "reward/mean",
              "kl/teacher"):
    assert all(np.isfinite(r[key]) for r in records), key
  final = json.loads((workdir / "eval" / "final.json").read_text())
  assert final["step"] == 4
  for mode in ("greedy", "sample"):
    assert EVAL_KEYS <= set(final[mode])
  for name in ("teacher", "initial"):
    assert (workdir / "eval" / f"{name}.json").exists()
  assert (workdir / "student_hf" / "config.json").exists()
  assert (workdir / "student_hf" / "model.safetensors").exists()
  assert (workdir / "checkpoints" / "4").is_dir()
  table = train.summary_table(summary)
  assert "student after" in table and "factuality" in table


def _weights(workdir):
  return safetensors.numpy.load_file(
      str(pathlib.Path(workdir) / "student_hf" / "model.safetensors"))


def test_resume_reaches_the_same_final_state(model_dirs, tmp_path, shared):
  straight, resumed = tmp_path / "straight", tmp_path / "resumed"
  run_values = dict(agent="gkd", lmbda=0.5)
  train.run(values(model_dirs, straight, **run_values), progress=False,
            shared=shared)
  # A run killed after step 3: checkpoint 2 exists, metrics of step 3 too.
  train.run(values(model_dirs, resumed, steps=2, **run_values),
            progress=False, shared=shared)
  with (resumed / "metrics.jsonl").open("a") as f:
    f.write(json.dumps({"step": 3, "loss/total": 123.0}) + "\n")
    f.write('{"step": 4, "loss/tot')  # a line cut by the kill
  train.run(values(model_dirs, resumed, **run_values), progress=False,
            shared=shared)
  assert [r["step"] for r in _metrics(resumed)] == [1, 2, 3, 4]
  a, b = _weights(straight), _weights(resumed)
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_allclose(a[k], b[k], rtol=1e-6, atol=1e-7)


SWEEP_ALPHAS = [0.0, 0.5, 1.0]


@pytest.fixture(scope="module")
def sweeps(model_dirs, tmp_path_factory):
  """{vectorized: workdir} of a 3-point sweep run each way."""
  roots = {}
  for vectorized in (False, True):
    roots[vectorized] = tmp_path_factory.mktemp("sweep") / "sweep"
    # A length penalty gives the random students rewards that differ.
    sweep_alpha.sweep(values(model_dirs, roots[vectorized], steps=2,
                             warmup_steps=0, reward="rouge1",
                             length_penalty=0.1),
                      SWEEP_ALPHAS, progress=False, vectorized=vectorized)
  return roots


@pytest.mark.parametrize("vectorized", [False, True])
def test_three_point_sweep(sweeps, vectorized):
  root = sweeps[vectorized]
  data = json.loads((root / "sweep.json").read_text())
  assert [r["alpha"] for r in data["rows"]] == SWEEP_ALPHAS
  assert {"teacher", "student start"} == set(data["references"])
  with (root / "sweep.csv").open() as f:
    table = list(csv.DictReader(f))
  assert [float(r["alpha"]) for r in table] == SWEEP_ALPHAS
  assert EVAL_KEYS <= set(table[0])
  assert (root / "sweep.png").stat().st_size > 1000
  # At alpha = 0 the teacher is not part of the loss: no divergence term.
  alpha0 = _metrics(root / "alpha_0")
  assert all(r["loss/divergence"] == 0.0 for r in alpha0)
  alpha1 = _metrics(root / "alpha_1")
  assert all("reward/mean" not in r for r in alpha1)
  for alpha in SWEEP_ALPHAS:
    assert (root / f"alpha_{alpha:g}" / "student_hf" / "config.json").exists()


def test_vectorized_sweep_matches_the_sequential_one(sweeps, model_dirs):
  roots = sweeps
  for alpha in SWEEP_ALPHAS:
    sequential, vectorized = (root / f"alpha_{alpha:g}"
                              for root in (roots[False], roots[True]))
    a, b = _weights(sequential), _weights(vectorized)
    assert a.keys() == b.keys()
    moved = max(np.abs(a[k] - w).max() for k, w in
                safetensors.numpy.load_file(str(pathlib.Path(
                    model_dirs[1]) / "model.safetensors")).items())
    assert moved > 1e-4, alpha  # training changed the weights
    for k in a:
      np.testing.assert_allclose(a[k], b[k], rtol=1e-4, atol=1e-6,
                                 err_msg=f"alpha={alpha} {k}")
    ma, mb = _metrics(sequential), _metrics(vectorized)
    assert [r["step"] for r in ma] == [r["step"] for r in mb] == [1, 2]
    for ra, rb in zip(ma, mb):
      assert set(ra) == set(rb)
      for key in set(ra) - {"step", "time"}:
        np.testing.assert_allclose(ra[key], rb[key], rtol=1e-4, atol=1e-6,
                                   err_msg=f"alpha={alpha} {key}")


@pytest.mark.slow
def test_vectorized_sweep_resumes_after_an_interruption(model_dirs,
                                                        tmp_path):
  alphas = [0.0, 0.5]
  settings = dict(reward="rouge1", length_penalty=0.1)
  straight, resumed = tmp_path / "straight", tmp_path / "resumed"
  sweep_alpha.sweep(values(model_dirs, straight, **settings), alphas,
                    progress=False, vectorized=True)
  # A run killed after step 3: checkpoint 2 exists, metrics of step 3 too.
  sweep_alpha.sweep(values(model_dirs, resumed, steps=2, **settings),
                    alphas, progress=False, vectorized=True)
  assert (resumed / "checkpoints" / "2").is_dir()
  with (resumed / "alpha_0.5" / "metrics.jsonl").open("a") as f:
    f.write(json.dumps({"step": 3, "loss/total": 123.0}) + "\n")
  with pytest.raises(ValueError, match=r"alphas=0,1 is not allowed.*0,0\.5"):
    sweep_alpha.sweep(values(model_dirs, resumed, **settings), [0.0, 1.0],
                      progress=False, vectorized=True)
  sweep_alpha.sweep(values(model_dirs, resumed, **settings), alphas,
                    progress=False, vectorized=True)
  for alpha in alphas:
    name = f"alpha_{alpha:g}"
    records = _metrics(resumed / name)
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    for a, b in zip(_metrics(straight / name), records):
      np.testing.assert_allclose(a["loss/total"], b["loss/total"],
                                 rtol=1e-5)
    a, b = _weights(straight / name), _weights(resumed / name)
    assert a.keys() == b.keys()
    for k in a:
      np.testing.assert_allclose(a[k], b[k], rtol=1e-6, atol=1e-7)


def test_repeated_alphas_are_refused():
  with pytest.raises(ValueError, match=r"alphas=\[0\.5, 0\.1, 0\.5\] is not "
                     r"allowed; each alpha may appear once; repeated: 0\.5"):
    sweep_alpha.parse_alphas(["0.5", "0.1", "0.50"])


def _cli(module, *args, cwd=None):
  env = shared_programs.subprocess_env(JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", module, *args],
                        capture_output=True, text=True, env=env, cwd=cwd,
                        timeout=600)


@pytest.mark.parametrize("overrides,message", [
    (dict(alpha=1.5), "alpha=1.5"),
    (dict(beta=-1.0), "beta=-1"),
    (dict(agent="gkd", lmbda=2.0), "lmbda=2"),
    (dict(steps=0), "steps=0"),
    (dict(batch_size=-2), "batch_size=-2"),
    (dict(agent="sft", alpha=0.5),
     "--alpha=0.5 is not allowed; --agent=sft does not read it"),
    (dict(agent="gkd_rl", ppo_epsilon=0.1),
     "--ppo_epsilon=0.1 is not allowed; --agent=gkd_rl does not read it"),
    (dict(task="chess"), "--task='chess'"),
    (dict(reward="bleu"), "--reward='bleu'"),
    (dict(student="/nonexistent/model"), "/nonexistent/model"),
    (dict(teacher_temperature=float("inf")), "teacher_temperature=inf"),
    (dict(teacher_temperature=1e-30), "teacher_temperature=1e-30"),
    (dict(student_temperature=5e3), "student_temperature=5000"),
    (dict(sample_temperature=1e-9), "sample_temperature=1e-09"),
    (dict(length_penalty=float("nan")), "length_penalty=nan"),
    (dict(length_penalty=float("inf")), "length_penalty=inf"),
])
def test_bad_input_fails_before_any_work(overrides, message, tmp_path,
                                         monkeypatch):
  def no_training(**kwargs):
    raise AssertionError("training started despite bad input")

  monkeypatch.setattr(train.loop, "train", no_training)
  run_values = train.default_values(workdir=str(tmp_path / "w"),
                                    cache_dir="/nonexistent-cache")
  run_values.update(overrides)
  with pytest.raises((ValueError, FileNotFoundError)) as error:
    train.run(run_values, progress=False)
  assert message in str(error.value)
  assert not (tmp_path / "w" / "checkpoints").exists()


def test_cli_reports_bad_input_and_exits_non_zero(tmp_path):
  result = _cli("gkdrl.runners.train", f"--workdir={tmp_path / 'w'}",
                "--alpha=1.5")
  assert result.returncode != 0
  assert "alpha=1.5 is not allowed; allowed values lie in [0, 1]" in (
      result.stderr)


def test_evaluate_cli_on_a_workdir(model_dirs, tmp_path, shared):
  workdir = tmp_path / "run"
  train.run(values(model_dirs, workdir, agent="sft", steps=1),
            progress=False, shared=shared)
  result = _cli("gkdrl.runners.evaluate", f"--workdir={workdir}",
                "--eval_examples=4", "--max_new_tokens=6")
  assert result.returncode == 0, result.stderr[-3000:]
  out = json.loads((workdir / "eval" / "evaluate.json").read_text())
  for mode in ("greedy", "sample"):
    assert EVAL_KEYS <= set(out[mode])
  assert "rouge2" in result.stdout


def test_evaluate_cli_on_a_checkpoint(model_dirs, tmp_path, shared):
  workdir = tmp_path / "run"
  train.run(values(model_dirs, workdir, agent="sft", steps=2),
            progress=False, shared=shared)
  output = tmp_path / "ckpt.json"
  result = _cli("gkdrl.runners.evaluate", f"--workdir={workdir}",
                "--step=2", "--eval_examples=4", "--max_new_tokens=6",
                f"--output={output}")
  assert result.returncode == 0, result.stderr[-3000:]
  from_checkpoint = json.loads(output.read_text())
  assert "checkpoint 2" in from_checkpoint["model"]
  # The final checkpoint and student_hf hold the same parameters.
  result = _cli("gkdrl.runners.evaluate", f"--workdir={workdir}",
                "--eval_examples=4", "--max_new_tokens=6",
                f"--output={tmp_path / 'hf.json'}")
  assert result.returncode == 0, result.stderr[-3000:]
  from_hf = json.loads((tmp_path / "hf.json").read_text())
  assert from_checkpoint["greedy"] == from_hf["greedy"]


def test_missing_hub_dataset_is_named(model_dirs, tmp_path, monkeypatch):
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
  teacher, student = model_dirs
  run_values = train.default_values(task="xsum", teacher=teacher,
                                    student=student,
                                    workdir=str(tmp_path / "w"))
  with pytest.raises(FileNotFoundError, match="xsum"):
    train.run(run_values, progress=False)
  assert not (tmp_path / "w").exists()


@pytest.mark.slow
def test_train_on_a_device_mesh_matches_one_device(model_dirs, tmp_path,
                                                   shared):
  """--mesh on 4 forced CPU devices, in a subprocess (JAX fixes the device
  count at start-up): same losses as the single-device run."""
  teacher, student = model_dirs
  common = dict(steps=3, batch_size=4, eval_examples=4, max_new_tokens=6,
                agent="gkd", lmbda=1.0)
  train.run(values(model_dirs, tmp_path / "one", **common), progress=False,
            shared=shared)
  env = shared_programs.subprocess_env(
      "--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
  args = [f"--{k}={v}" for k, v in common.items()]
  result = subprocess.run(
      [sys.executable, "-m", "gkdrl.runners.train", f"--teacher={teacher}",
       f"--student={student}", f"--workdir={tmp_path / 'mesh'}",
       "--mesh=data:2,fsdp:2", "--log_every=1", "--save_every=2",
       "--eval_samples_per_prompt=2", *args],
      capture_output=True, text=True, env=env, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  # A runner's own process on the CPU keeps its scratch memory by default.
  if cpu_memory._glibc():  # pylint: disable=protected-access
    assert ("CPU programs reuse their scratch memory between calls."
            in result.stderr), result.stderr[-3000:]
  one, mesh = _metrics(tmp_path / "one"), _metrics(tmp_path / "mesh")
  assert [r["step"] for r in mesh] == [1, 2, 3]
  for a, b in zip(one, mesh):
    assert b["loss/total"] == pytest.approx(a["loss/total"], rel=1e-4)


def test_mesh_must_split_the_batch(tmp_path, monkeypatch):
  monkeypatch.setattr(train.loop, "train", None)
  monkeypatch.setattr(train.setup, "make_reward", None)  # not reached
  # Four devices as far as the mesh spec goes: data:2,fsdp:2 is a valid
  # mesh, and 3 prompts * 2 samples cannot split into its 4 data shards.
  monkeypatch.setattr(train.parallel.mesh.jax, "device_count", lambda: 4)
  run_values = train.default_values(workdir=str(tmp_path / "w"),
                                    mesh="data:2,fsdp:2", batch_size=3,
                                    samples_per_prompt=2)
  with pytest.raises(ValueError) as error:
    train.run(run_values, progress=False)
  assert str(error.value) == (
      "--batch_size=3 is not allowed; it gives 6 rows per batch, which "
      "--mesh='data:2,fsdp:2' cannot split into 4 equal data shards "
      "(data * fsdp).")
  # A mesh the devices cannot form is named too.
  run_values.update(mesh="data:3", batch_size=4)
  with pytest.raises(ValueError, match="'data:3': sizes multiply to 3"):
    train.run(run_values, progress=False)


def test_grad_accum_steps_must_split_the_batch(tmp_path, monkeypatch):
  monkeypatch.setattr(train.loop, "train", None)
  run_values = train.default_values(workdir=str(tmp_path / "w"),
                                    agent="gkd", batch_size=6,
                                    grad_accum_steps=4)
  monkeypatch.setattr(train.setup, "load_models", None)  # not reached
  with pytest.raises(ValueError, match=r"grad_accum_steps=4 is not "
                     r"allowed; it must divide the 6 rows of each batch"):
    train.run(run_values, progress=False)
