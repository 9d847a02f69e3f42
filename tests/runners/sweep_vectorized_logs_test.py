"""`sweep_alpha --vectorized`: each alpha's samples and TensorBoard events."""

import json

import numpy as np
import pytest

from gkdrl.runners import sweep_alpha
from tests.runners.loggers_test import _events
from tests.runners.loggers_test import _jsonl
from tests.runners.loggers_test import _scalars
from tests.runners.runners_test import values

ALPHAS = [0.0, 1.0]


@pytest.fixture(scope="module")
def root(model_dirs, tmp_path_factory):
  root = tmp_path_factory.mktemp("vectorized") / "sweep"
  sweep_alpha.sweep(values(model_dirs, root, steps=2, eval_every=1,
                           warmup_steps=0, log_to="tensorboard"),
                    ALPHAS, progress=False, vectorized=True)
  return root


@pytest.mark.parametrize("alpha", ALPHAS)
def test_each_alpha_writes_its_evaluation_samples(root, alpha):
  eval_dir = root / f"alpha_{alpha:g}" / "eval"
  for name in ("teacher", "initial", "step_1", "final"):
    lines = (eval_dir / f"samples_{name}.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert records and {"prompt", "completion", "mode"} <= set(records[0])
  assert json.loads((eval_dir / "step_1.json").read_text())["step"] == 1


def test_each_alpha_writes_its_own_tensorboard_events(root):
  losses = []
  for alpha in ALPHAS:
    workdir = root / f"alpha_{alpha:g}"
    events = _events(workdir)
    jsonl = _jsonl(workdir)
    loss = _scalars(events, "loss/total")
    assert [step for step, _ in loss] == [1, 2]
    np.testing.assert_allclose([v for _, v in loss],
                               [r["loss/total"] for r in jsonl], rtol=1e-6)
    final = json.loads((workdir / "eval" / "final.json").read_text())
    rewards = dict(_scalars(events, "eval/greedy/reward"))
    assert set(rewards) == {0, 1, 2}  # initial, step 1, final
    assert rewards[2] == pytest.approx(final["greedy"]["reward"], rel=1e-6)
    losses.append([v for _, v in loss])
  # The two students' metrics went to their own files, not both to one.
  assert losses[0] != losses[1]
