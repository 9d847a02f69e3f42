"""--log_to: metrics and samples in TensorBoard and W&B, plots.png.

TensorBoard event files are read back with TensorBoard's own reader
(`EventAccumulator`) and compared with metrics.jsonl and eval/*.json.
"""

import importlib.util
import json
import pathlib
import time

import pytest
from tensorboard.backend.event_processing import event_accumulator

from gkdrl import evaluation
from gkdrl.evaluation import samples as samples_lib
from gkdrl.runners import loggers
from gkdrl.runners import loop
from gkdrl.runners import train

METRICS = {1: {"loss/total": 0.5, "reward/mean": 0.25},
           2: {"loss/total": 0.375, "reward/mean": 0.5},
           3: {"loss/total": 0.125, "reward/mean": 0.75}}
EVAL = {"greedy": {"reward": 0.5, "teacher_kl": 0.25},
        "sample": {"reward": 0.125, "teacher_kl": 0.75}}
SAMPLES = {"greedy": [{"prompt": "doc one", "completion": "summary one",
                       "reference": "ref one", "reward": 0.5, "length": 3,
                       "teacher_kl": 0.25}],
           "sample": []}


def _events(workdir):
  accumulator = event_accumulator.EventAccumulator(
      str(pathlib.Path(workdir) / "tensorboard"),
      size_guidance={event_accumulator.SCALARS: 0,
                     event_accumulator.TENSORS: 0})
  accumulator.Reload()
  return accumulator


def _scalars(accumulator, tag):
  return [(e.step, e.value) for e in accumulator.Scalars(tag)]


def _texts(accumulator, tag):
  return [(e.step, e.tensor_proto.string_val[0].decode())
          for e in accumulator.Tensors(f"{tag}/text_summary")]


def _jsonl(workdir):
  lines = (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()
  return [json.loads(line) for line in lines]


@pytest.mark.parametrize("value,expected", [
    ("", ("jsonl",)), (None, ("jsonl",)), ("tensorboard", ("jsonl",
                                                            "tensorboard")),
    ("tensorboard,jsonl,tensorboard", ("jsonl", "tensorboard")),
    (["jsonl", " tensorboard "], ("jsonl", "tensorboard")),
])
def test_parse_log_to(value, expected):
  assert loggers.parse_log_to(value) == expected


def test_unknown_logger_is_a_clear_error():
  with pytest.raises(ValueError, match=(
      r"^log_to='tb' is not allowed; allowed values: 'jsonl', "
      r"'tensorboard', 'wandb'\.$")):
    loop.LoopConfig(steps=1, batch_size=1, log_to="jsonl,tb")


def test_wandb_without_the_package_is_a_clear_error(monkeypatch):
  find_spec = importlib.util.find_spec
  monkeypatch.setattr(
      importlib.util, "find_spec",
      lambda name, *a: None if name == "wandb" else find_spec(name, *a))
  with pytest.raises(ValueError, match=r"^log_to='wandb' is not allowed; "
                     r"it needs the wandb package: pip install wandb"):
    loggers.parse_log_to("wandb")


def test_tensorboard_scalars_evaluations_and_samples(tmp_path):
  run = loggers.make_loggers("tensorboard", tmp_path)
  run.evaluation("teacher", 0, EVAL, SAMPLES)
  for step, values in METRICS.items():
    run.scalars(step, values)
  run.evaluation("step_2", 2, EVAL, SAMPLES)
  run.close()
  events = _events(tmp_path)
  for key in ("loss/total", "reward/mean"):
    assert _scalars(events, key) == [(step, values[key])
                                     for step, values in METRICS.items()]
  assert _scalars(events, "eval/sample/teacher_kl") == [(2, 0.75)]
  assert _scalars(events, "teacher/greedy/reward") == [(0, 0.5)]
  (step, text), = _texts(events, "samples/greedy")
  assert step == 2 and text == samples_lib.to_markdown(SAMPLES["greedy"])
  assert _texts(events, "samples_teacher/greedy")[0][0] == 0
  assert "samples/sample/text_summary" not in events.Tags()["tensors"]
  assert json.loads((tmp_path / "eval" / "step_2.json").read_text()) == {
      "step": 2, **EVAL}
  assert samples_lib.read_jsonl(tmp_path / "eval" /
                                "samples_step_2.jsonl") == {
                                    "greedy": SAMPLES["greedy"]}


def test_tensorboard_drops_the_steps_a_resumed_run_redoes(tmp_path):
  run = loggers.make_loggers("tensorboard", tmp_path)
  for step, values in METRICS.items():
    run.scalars(step, values)
  run.close()
  resumed = loggers.make_loggers("tensorboard", tmp_path, resume_step=2)
  resumed.scalars(3, {"loss/total": 9.0, "reward/mean": 8.0})
  resumed.close()
  assert _scalars(_events(tmp_path), "loss/total") == [
      (1, 0.5), (2, 0.375), (3, 9.0)]


@pytest.mark.skipif(importlib.util.find_spec("wandb") is None,
                    reason="wandb is not installed (pip install wandb)")
def test_wandb_offline_run_holds_config_metrics_and_samples(tmp_path,
                                                            monkeypatch):
  monkeypatch.setenv("WANDB_MODE", "offline")
  monkeypatch.setenv("WANDB_SILENT", "true")
  run = loggers.make_loggers(["wandb"], tmp_path,
                             run_config={"agent": "gkd_rl",
                                         "alpha_value": 0.625})
  for step, values in METRICS.items():
    run.scalars(step, values)
  run.evaluation("final", 3, EVAL, SAMPLES)
  run.close()
  run_dir, = (tmp_path / "wandb").glob("offline-run-*")
  # The run file holds protobuf records: the config's and metrics' keys and
  # values are stored verbatim.
  texts = (b"alpha_value", b"0.625", b"loss/total", b"0.375",
           b"eval/sample/teacher_kl")
  for _ in range(60):  # wandb's writer process may still be flushing
    data = next(run_dir.glob("run-*.wandb")).read_bytes()
    if all(text in data for text in texts):
      break
    time.sleep(0.5)
  for text in texts:
    assert text in data, text
  table, = run_dir.glob("files/media/table/samples/greedy_*.table.json")
  table = json.loads(table.read_text())
  assert table["columns"] == [k for k in evaluation.SAMPLE_KEYS
                              if k in SAMPLES["greedy"][0]]
  assert table["data"][0][:2] == ["doc one", "summary one"]
  # A rerun in the same workdir continues the same W&B run.
  run_id = (tmp_path / "wandb" / "run_id").read_text().strip()
  assert run_dir.name.endswith(run_id)


def test_train_run_logs_to_tensorboard_and_plots(model_dirs, tmp_path):
  workdir = tmp_path / "run"
  teacher, student = model_dirs
  train.run(train.default_values(
      teacher=teacher, student=student, workdir=str(workdir), steps=4,
      batch_size=4, save_every=2, log_every=1, eval_every=2,
      eval_examples=8, eval_samples_per_prompt=2, max_new_tokens=8,
      log_to=["tensorboard"]), progress=False)
  events = _events(workdir)
  records = _jsonl(workdir)
  assert [r["step"] for r in records] == [1, 2, 3, 4]
  for key in ("loss/total", "reward/mean", "kl/teacher"):
    assert _scalars(events, key) == [
        (r["step"], pytest.approx(r[key], rel=1e-6)) for r in records], key
  evaluations = {name: json.loads((workdir / "eval" / f"{name}.json")
                                  .read_text())
                 for name in ("initial", "step_2", "final")}
  for mode in ("greedy", "sample"):
    for key in ("reward", "teacher_kl", "rouge2"):
      assert _scalars(events, f"eval/{mode}/{key}") == [
          (e["step"], pytest.approx(e[mode][key], rel=1e-6))
          for e in evaluations.values()]
    assert [step for step, _ in _texts(events, f"samples/{mode}")] == [
        0, 2, 4]
  for name in ("teacher", "initial", "step_2", "final"):
    samples = samples_lib.read_jsonl(workdir / "eval" /
                                     f"samples_{name}.jsonl")
    assert list(samples) == ["greedy", "sample"]
    assert [len(r) for r in samples.values()] == [train.EVAL_SAMPLES] * 2
    assert set(samples["greedy"][0]) == set(evaluation.SAMPLE_KEYS)
  plot = workdir / "plots.png"
  assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert plot.stat().st_size > 20_000  # eight panels, not an empty figure
