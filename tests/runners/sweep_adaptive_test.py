"""sweep_alpha --adaptive_target: one adaptive-alpha run beside the fixed."""

import csv
import json

from gkdrl.runners import sweep_alpha
from tests.runners.runners_test import _metrics
from tests.runners.runners_test import values


def test_adaptive_run_joins_the_sweep(model_dirs, tmp_path):
  root = tmp_path / "sweep"
  rows = sweep_alpha.sweep(
      values(model_dirs, root, steps=3, warmup_steps=0, reward="rouge1",
             length_penalty=0.1),
      [0.5], progress=False, adaptive_target=1e-4)
  assert [r["alpha"] for r in rows] == [0.5, "adaptive"]
  data = json.loads((root / "sweep.json").read_text())
  assert data["rows"][-1]["target_teacher_kl"] == 1e-4
  with (root / "sweep.csv").open() as f:
    assert [r["alpha"] for r in csv.DictReader(f)] == ["0.5", "adaptive"]
  assert (root / "sweep.png").stat().st_size > 1000
  # The teacher KL of random models is far above 1e-4: alpha only rises.
  alphas = [r["train/alpha"] for r in _metrics(root / "adaptive_kl_0.0001")]
  assert alphas[0] == 0.5 and all(b > a for a, b in zip(alphas, alphas[1:]))
  fixed = [r["train/alpha"] for r in _metrics(root / "alpha_0.5")]
  assert fixed == [0.5] * len(fixed)
