"""format_table: alignment, column choice, nested results, missing cells."""

import pytest

from gkdrl import evaluation


def test_rows_columns_and_alignment():
  table = evaluation.format_table(
      {"before": {"reward": 0.123456, "rouge2": 12.0},
       "after": {"reward": 0.5, "rouge2": 45.678}})
  lines = table.split("\n")
  assert lines == [
      "name    reward  rouge2",
      "before  0.1235      12",
      "after      0.5   45.68",
  ]


def test_selected_columns_in_order_and_missing_cells():
  table = evaluation.format_table(
      {"teacher": {"reward": 1.0, "length": 7.25},
       "student": {"reward": 0.25, "teacher_kl": 0.75}},
      columns=["teacher_kl", "reward"])
  assert table.split("\n") == [
      "name     teacher_kl  reward",
      "teacher           -       1",
      "student        0.75    0.25",
  ]


def test_evaluate_output_gives_a_row_per_mode():
  results = {"greedy": {"reward": 0.5}, "sample": {"reward": 0.25}}
  table = evaluation.format_table({"after": results})
  assert [line.split() for line in table.split("\n")] == [
      ["name", "reward"], ["after/greedy", "0.5"], ["after/sample", "0.25"]]
  # The evaluate() dict itself is rows of modes.
  assert evaluation.format_table(results).split("\n")[1].split() == [
      "greedy", "0.5"]


def test_non_finite_and_large_values():
  table = evaluation.format_table(
      {"r": {"a": float("nan"), "b": float("inf"), "c": 1e9, "d": 128.0}})
  assert table.split("\n")[1].split() == ["r", "nan", "inf", "1e+09", "128"]


@pytest.mark.parametrize("results,columns,match", [
    ([{"reward": 1.0}], None, "results"),
    ({"a": 1.0}, None, r"results\['a'\]"),
    ({"a": {"x": 1.0, "m": {"x": 1.0}}}, None, "mixes"),
    ({"a": {"x": 1.0}}, "x", "columns"),
])
def test_bad_inputs_raise(results, columns, match):
  with pytest.raises(ValueError, match=match):
    evaluation.format_table(results, columns)
