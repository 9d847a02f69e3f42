"""The real-pair study: its English data, and its quick mode end to end."""

import json
import math

import pytest

from experiments import english_problems
from experiments import real_pair
from gkdrl import networks
from gkdrl import tasks
from tests import conftest

VERDICTS = {"confirmed", "contradicted", "cannot tell"}


def test_english_rendering():
  assert english_problems.english(
      "Ada has 7 apples . Ada buys 5 more apples . how many apples does Ada "
      "have now ?") == ("Ada has 7 apples. Ada buys 5 more apples. How many "
                        "apples does Ada have now?")
  assert english_problems.english("7 + 5 = 12 . 12 * 2 = 24 .") == (
      "7 + 5 = 12. 12 * 2 = 24.")


def test_problems_are_distinct_gsm8k_lines_with_correct_answers(tmp_path):
  path = english_problems.write_problems(tmp_path / "data.jsonl", 50)
  rows = [json.loads(line) for line in path.read_text().splitlines()]
  assert len(rows) == 50
  assert len({r["question"] for r in rows}) == 50
  for row in rows:
    assert set(row) == {"question", "answer"}
    assert " ." not in row["question"] and row["question"][0].isupper()
    work, marker, _ = row["answer"].rpartition("\n#### ")
    assert marker
    # Independent check of the oracle's reference: replay the equations.
    value = None
    for equation in work.rstrip(".").split(". "):
      left, right = equation.split(" = ")
      assert eval(left) == int(right), equation  # pylint: disable=eval-used
      value = int(right)
    assert tasks.extract_answer(row["answer"]) == value


def test_settings_validate():
  with pytest.raises(ValueError, match="keep_every=0 is not allowed"):
    real_pair.PairSetting(**{**vars(real_pair.SETTINGS["quick"]),
                             "keep_every": 0})
  with pytest.raises(ValueError, match="methods=.*GKD.* is not allowed"):
    real_pair.PairSetting(**{**vars(real_pair.SETTINGS["quick"]),
                             "methods": ("GKD",)})
  with pytest.raises(ValueError, match="seeds=.* is not allowed"):
    real_pair.PairSetting(**{**vars(real_pair.SETTINGS["quick"]),
                             "seeds": (1, 1)})


# Runs the 135M pair, where unoptimised programs lose more time running
# than they save compiling.
@pytest.mark.xla_optimized
@pytest.mark.slow
@pytest.mark.assets
def test_quick_study_trains_its_methods_and_writes_results(tmp_path):
  conftest.asset("smollm2")
  setting = real_pair.SETTINGS["quick"]
  results = real_pair.run_study(tmp_path, setting, "quick")
  folder = tmp_path / real_pair.NAME
  data = json.loads((folder / "real_pair.json").read_text())
  markdown = (folder / "real_pair.md").read_text()
  assert set(data["stats"]) == {"Teacher", "SFT start", *setting.methods}
  for label, stats in data["stats"].items():
    assert f"| {label} |" in markdown
    for mode in real_pair.MODES:
      stat = stats[mode]["reward"]
      assert stat["n"] == len(setting.seeds)
      assert all(0.0 <= v <= 1.0 for v in stat["values"])
      assert math.isfinite(stats[mode]["teacher_kl"]["mean"])
  assert sorted(data["run_seconds"]) == sorted(setting.methods)
  # The claims both of whose methods ran: GKD JSD(0.9) against the SFT
  # start and against Supervised KD.
  assert len(data["claims"]) == 2
  for claim in data["claims"]:
    assert claim["verdict"] in VERDICTS and claim["claim"] in markdown
  # The student is blocks 0 and 15 of the 30-block teacher.
  student, _ = networks.from_pretrained(results["paths"]["student"])
  teacher, _ = networks.from_pretrained(results["paths"]["teacher"])
  assert (teacher.config.n_layers, student.config.n_layers) == (30, 2)
  assert student.config.d_model == teacher.config.d_model
  # A second call reads every run back instead of training again.
  again = real_pair.run_study(tmp_path, setting, "quick")
  assert again["stats"] == results["stats"]
  assert again["seconds"] < results["seconds"]
