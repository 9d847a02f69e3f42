"""train, evaluate and sweep_alpha end to end on tiny random T5 directories."""

import json
import pathlib

import jax
import numpy as np
import pytest
import safetensors.numpy

from gkdrl import networks
from gkdrl.runners import sweep_alpha
from gkdrl.runners import train
from tests.runners.runners_test import _cli
from tests.runners.runners_test import values
from tests.tiny_models import tiny_t5_config


@pytest.fixture(scope="module")
def t5_dirs(tmp_path_factory, facts):
  """(teacher_dir, student_dir): a v1.1 teacher, a v1.0 student."""
  task, _ = facts
  root = tmp_path_factory.mktemp("t5")
  dirs = []
  for name, width, gated in (("teacher", 24, True), ("student", 16, False)):
    model = networks.make_t5(tiny_t5_config(task, width, 1, gated=gated))
    params = model.init(jax.random.key(len(dirs)))
    dirs.append(str(networks.save_pretrained(model, params, root / name,
                                             tokenizer=task.tokenizer)))
  return tuple(dirs)


def _records(workdir):
  lines = (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()
  return [json.loads(line) for line in lines]


@pytest.mark.slow
@pytest.mark.parametrize("agent", ["gkd", "gkd_rl"])
def test_train_runs_a_t5_student_and_teacher(agent, t5_dirs, tmp_path):
  workdir = tmp_path / agent
  train.run(values(t5_dirs, workdir, agent=agent, steps=2, save_every=2,
                   eval_examples=4, eval_samples_per_prompt=1),
            progress=False)
  records = _records(workdir)
  assert [r["step"] for r in records] == [1, 2]
  assert all(np.isfinite(r["kl/teacher"]) for r in records)
  final = json.loads((workdir / "eval" / "final.json").read_text())
  assert np.isfinite(final["greedy"]["teacher_kl"])
  # The trained student is saved as a T5 directory that loads back.
  model, params = networks.from_pretrained(workdir / "student_hf")
  assert model.is_encoder_decoder
  hf = json.loads((workdir / "student_hf" / "config.json").read_text())
  assert hf["is_encoder_decoder"] and hf["model_type"] == "t5"
  np.testing.assert_allclose(
      params["t5/shared"]["embeddings"],
      _saved_shared(workdir), atol=0)
  if agent == "gkd":
    # evaluate reads the workdir's T5 student back.
    result = _cli("gkdrl.runners.evaluate", f"--workdir={workdir}",
                  "--eval_examples=4", "--max_new_tokens=6")
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads((workdir / "eval" / "evaluate.json").read_text())
    assert np.isfinite(out["greedy"]["teacher_kl"])


def _saved_shared(workdir):
  tensors = safetensors.numpy.load_file(
      workdir / "student_hf" / "model.safetensors")
  return tensors["shared.weight"]


@pytest.mark.slow
def test_sweep_alpha_runs_t5_models(t5_dirs, tmp_path):
  root = tmp_path / "sweep"
  sweep_alpha.sweep(values(t5_dirs, root, steps=1, save_every=1,
                           eval_examples=4, eval_samples_per_prompt=1),
                    [0.0, 1.0], progress=False, vectorized=True)
  data = json.loads((root / "sweep.json").read_text())
  assert [r["alpha"] for r in data["rows"]] == [0.0, 1.0]
  for alpha in ("0", "1"):
    hf = json.loads((root / f"alpha_{alpha}" / "student_hf" /
                     "config.json").read_text())
    assert hf["is_encoder_decoder"]
